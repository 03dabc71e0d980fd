import ArgumentParser
import Foundation

/// Every benchmark in one run, each figure with its target and PASS/MISS.
struct AllBenchmarks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "all",
        abstract: "Run every benchmark and print each figure with its target and PASS/MISS (--quick: under 2 minutes).",
        discussion: """
            Full scale: e2e 8 connections × 16 calls for 20 s; live-calls 10,000 connections for 60 s; cutoff 1,000 \
            calls; pricing 2,000,000 frames × 5 rounds. --quick: e2e 8 s, 2,000 live calls for 20 s, pricing \
            400,000 frames × 3 rounds. Exits 1 when any target is missed.
            """
    )

    @Flag(help: "Smaller scale for regression checks (every ratio still printed).") var quick = false

    func run() async throws {
        let started = ContinuousClock.now
        var sections: [(String, [BenchmarkFigure])] = []
        func section(_ title: String, _ measure: () async throws -> [BenchmarkFigure]) async throws {
            print("== \(title)")
            let figures = try await measure()
            print(BenchmarkFigure.render(figures))
            sections.append((title, figures))
        }
        try await section("codec and pricing (one core)") { try PricingBenchmark.measure(frames: quick ? 400_000 : 2_000_000, rounds: quick ? 3 : 5) }
        // The latency runs come before the throughput run: in the minute after it (both cores
        // saturated, ~1.5 M rows written) the live-call tail measured heavier (BENCHMARKS.md).
        try await section("many live calls") { try LiveCallsBenchmark.measure(quick ? .quick : LiveCallsBenchmark.Scale()) }
        try await section("cutoff latency") { try await CutoffBenchmark.measure(calls: 1_000, connections: 50, roundMilliseconds: 1_000, flushMilliseconds: 100) }
        try await section("end-to-end throughput") { try ThroughputBenchmark.measure(quick ? .quick : ThroughputBenchmark.Scale()) }
        let judged = sections.flatMap(\.1).filter { $0.passed != nil }
        print("== summary (\(quick ? "quick" : "full") run, \(String(format: "%.0f", (ContinuousClock.now - started).seconds)) s, \(ProcessInfo.processInfo.activeProcessorCount) cores)")
        print(BenchmarkFigure.render(judged))
        let missed = judged.filter { $0.passed == false }
        print(missed.isEmpty ? "every target met" : "\(missed.count) target(s) missed")
        if !missed.isEmpty { throw ExitCode.failure }
    }
}
