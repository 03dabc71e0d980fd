import ArgumentParser
import Foundation
import VoiceMeterDomain

/// Frames priced per second on one core: the pricing engine must never limit the pipeline.
struct PricingBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pricing",
        abstract: "Frames priced per second on one core (target: at least 1,000,000/s)."
    )

    @Option(help: "Frames to price per measured round.") var frames = 2_000_000
    @Option(help: "Measured rounds (after one warm-up round); the best and median are printed.") var rounds = 5

    static let targetFramesPerSecond = 1_000_000.0

    func run() throws {
        let book = BenchmarkPrices.seedBook
        let call = BenchmarkPrices.canonicalCallFrames
        var results: [Double] = []
        var checksum = ExactDecimal.zero
        for round in 0...rounds {
            let clock = ContinuousClock()
            let started = clock.now
            var framesDone = 0
            var total = ExactDecimal.zero
            while framesDone < frames {
                var meter = CallBillingMeter()
                for frame in call {
                    if case .priced(let usage) = meter.price(frame, book: book) { total = try total.adding(usage.totalCost) }
                }
                framesDone += call.count
            }
            let seconds = (clock.now - started).seconds
            if round > 0 { results.append(Double(framesDone) / seconds) }
            checksum = total
        }
        results.sort()
        let median = results[results.count / 2]
        print("pricing: \(call.count)-frame canonical calls, \(frames) frames per round, \(rounds) rounds, 1 core")
        print(String(format: "  frames priced per second: median %.0f, best %.0f", median, results.last!))
        print(String(format: "  ratio to the 1,000,000/s target: %.2fx (median)", median / Self.targetFramesPerSecond))
        print("  checksum (total cost of the last round, USD): \(checksum)")
    }
}

extension Duration {
    /// This duration in seconds, as a `Double`, for timing figures.
    var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}
