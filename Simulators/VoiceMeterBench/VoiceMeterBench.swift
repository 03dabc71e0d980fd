import ArgumentParser

@main
struct VoiceMeterBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "voicemeter-bench",
        abstract: "Measure VoiceMeter's throughput; build with -c release for meaningful numbers.",
        discussion: "Examples: swift run -c release voicemeter-bench pricing; swift run -c release voicemeter-bench ledger",
        subcommands: [AllBenchmarks.self, ThroughputBenchmark.self, LiveCallsBenchmark.self, PricingBenchmark.self, LedgerBenchmark.self, CutoffBenchmark.self, ServeChild.self]
    )
}
