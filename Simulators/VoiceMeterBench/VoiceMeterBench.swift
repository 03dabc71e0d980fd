import ArgumentParser

@main
struct VoiceMeterBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "voicemeter-bench",
        abstract: "Measure VoiceMeter's throughput; build with -c release for meaningful numbers.",
        discussion: "Example: swift run -c release voicemeter-bench pricing",
        subcommands: [PricingBenchmark.self]
    )
}
