import ArgumentParser
import Foundation
import VoiceMeterDomain

/// Frames priced, and frames decoded from JSON and priced, per second on one core: the codec and
/// the pricing engine must never limit the pipeline.
struct PricingBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pricing",
        abstract: "Micro-benchmarks on one core: frames priced per second (target ≥ 1,000,000/s) and frames decoded from JSON and priced."
    )

    @Option(help: "Frames per measured round.") var frames = 2_000_000
    @Option(help: "Measured rounds (after one warm-up round); the median is reported.") var rounds = 5
    @Flag(help: "Fewer frames and rounds, for regression checks.") var quick = false

    static let targetFramesPerSecond = 1_000_000.0

    func run() throws {
        print(BenchmarkFigure.render(try Self.measure(frames: quick ? 400_000 : frames, rounds: quick ? 3 : rounds)))
    }

    static func measure(frames: Int, rounds: Int) throws -> [BenchmarkFigure] {
        let book = BenchmarkPrices.seedBook
        let call = BenchmarkPrices.canonicalCallFrames
        let messages = call.enumerated().map { index, usage in
            Array(ClientMessage.usage(UsageFrame(callID: "CA-bench", seq: Int64(index + 1), usage: usage)).json.utf8)
        }
        print("pricing: \(call.count)-frame canonical calls, \(frames) frames per round, median of \(rounds) rounds, 1 core")
        var checksum = ExactDecimal.zero
        let priced = try medianRate(frames: frames, rounds: rounds, batch: call.count) {
            var meter = CallBillingMeter()
            for frame in call {
                if case .priced(let usage) = meter.price(frame, book: book) { checksum = try checksum.adding(usage.totalCost) }
            }
        }
        let decoded = try medianRate(frames: frames / 4, rounds: rounds, batch: call.count) {
            var meter = CallBillingMeter()
            for message in messages {
                guard case .success(.usage(let frame)) = ClientMessageDecoder.decode(message) else { throw ValidationError("a benchmark frame did not decode") }
                if case .priced(let usage) = meter.price(frame.usage, book: book) { checksum = try checksum.adding(usage.totalCost) }
            }
        }
        return [
            BenchmarkFigure("frames priced per second", String(format: "%.0f", priced), target: "≥ 1,000,000", passed: priced >= targetFramesPerSecond),
            BenchmarkFigure("frames decoded (JSON) and priced per second", String(format: "%.0f", decoded)),
            BenchmarkFigure("one core's share at 25,000 frames/s", String(format: "%.0f%% decoding and pricing", 25_000 / decoded * 100)),
            BenchmarkFigure("checksum (total cost priced, USD)", checksum.description),
        ]
    }

    /// Runs `body` (which handles `batch` frames) until `frames` are done, per round; the median rate.
    private static func medianRate(frames: Int, rounds: Int, batch: Int, _ body: () throws -> Void) throws -> Double {
        var rates: [Double] = []
        for round in 0...rounds {
            let started = ContinuousClock.now
            var done = 0
            while done < frames {
                try body()
                done += batch
            }
            if round > 0 { rates.append(Double(done) / (ContinuousClock.now - started).seconds) }
        }
        return rates.sorted()[rates.count / 2]
    }
}

extension Duration {
    /// This duration in seconds, as a `Double`, for timing figures.
    var seconds: Double { self / .seconds(1) }
}
