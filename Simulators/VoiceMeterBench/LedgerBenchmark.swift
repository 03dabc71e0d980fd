import ArgumentParser
import EmbeddedPostgres
import Foundation
import Logging
import PostgresClient
import Synchronization
import VoiceMeterCrypto
import VoiceMeterDomain
import VoiceMeterLedger
import VoiceMeterServer
import VoiceMeterStore

/// Committed events per second through the real ledger writer, next to the limit of the same SQL
/// path driven directly and the seed's one-INSERT-per-event design, in one run on one database.
struct LedgerBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger",
        abstract: "Ledger writer throughput next to the raw staged-COPY path and one INSERT per event.",
        discussion: "Uses DATABASE_URL, or a private PostgreSQL under /tmp/voicemeter-bench-cluster. Each run uses a fresh database."
    )

    @Option(help: "Events through the raw path and through the writer.") var events = 140_000
    @Option(help: "Events for the one-INSERT-per-event design (it is slow).") var seedEvents = 4_000
    @Option(help: "Events per transaction for the batched paths.") var batch = 2_000
    @Option(help: "Ledger writers (connections) for the pooled writer path, measured besides one.") var writers = 2
    @Option(help: "Live calls taking turns (one frame each per turn, each its own user), as at a frame a second per call; 1: whole calls in turn.")
    var interleave = 1

    func run() throws {
        let scratch = try BenchmarkDatabase.create()
        defer { scratch.drop() }
        let options = scratch.options
        let connection = try PostgresConnection(options)
        let book = try PriceStore(connection: connection).load()
        print("ledger: \(events) events in batches of \(batch) (70-frame canonical calls); seed design: \(seedEvents) events; limit on 1 connection")

        let raw = try LedgerPaths.measureLimit(LedgerPaths.events(events, prefix: "raw", book: book, interleaving: interleave), options, connections: 1, batch: batch)
        let single = try measureWriter(LedgerPaths.events(events, prefix: "writer1", book: book, interleaving: interleave), options, count: 1)
        let pooled = writers > 1 ? try measureWriter(LedgerPaths.events(events, prefix: "writerN", book: book, interleaving: interleave), options, count: writers) : single
        let seed = try LedgerPaths.measureSeedDesign(LedgerPaths.events(seedEvents, prefix: "seed", book: book), connection)
        print(String(format: "  limit (COPY → INSERT … ON CONFLICT → rollups, 1 connection): %9.0f events/s", raw))
        print(String(format: "  ledger writer, 1 connection (queue, batching, callbacks):    %9.0f events/s", single))
        print(String(format: "  ledger writers, %d connections:                               %9.0f events/s", writers, pooled))
        print(String(format: "  seed design (one INSERT per event, autocommit):              %9.0f events/s", seed))
        print(String(format: "  writer/limit (1 connection each): %.2f   %d writers/limit: %.2f   %d writers/seed design: %.1fx",
                     single / raw, writers, pooled / raw, writers, pooled / seed))
    }

    private func measureWriter(_ events: [UsageEvent], _ options: PostgresConnectionOptions, count: Int) throws -> Double {
        let committed = Atomic<Int>(0)
        let done = DispatchSemaphore(value: 0)
        let total = events.count
        let pool = LedgerWriters(count: count, options: options, batchEventsMax: batch, flushIntervalMilliseconds: 100,
                                 queueEventsMax: total + 1, logger: Logger(label: "bench"))
        pool.start(reporting: LedgerReports { result in
            if committed.add(result.events.count, ordering: .relaxed).newValue == total { done.signal() }
        })
        let started = ContinuousClock.now
        for event in events { _ = pool.writer(for: event.key.callID).submit(event) }
        done.wait()
        let seconds = (ContinuousClock.now - started).seconds
        pool.drainAndStop(timeoutSeconds: 5)
        return Double(total) / seconds
    }
}

/// The ledger's SQL path driven directly (the limit) and the seed's design, as yardsticks.
enum LedgerPaths {
    /// Priced events of 70-frame canonical calls, `count` in all. With `interleaving`, that many
    /// calls (each of its own user) take turns, one frame each, as live calls streaming a frame a
    /// second do: every batch then touches as many call and user rollups as it has events.
    static func events(_ count: Int, prefix: String, book: PriceBook, interleaving calls: Int = 1) -> [UsageEvent] {
        let frames = BenchmarkPrices.canonicalCallFrames
        var meters: [Int: CallBillingMeter] = [:]
        return (0..<count).map { index in
            // Whole calls one after another (500 users), or `calls` calls taking turns, each its own user.
            let (call, seq, user) = calls == 1
                ? (index / frames.count, index % frames.count + 1, "user-\(index / frames.count % 500)")
                : (index % calls, index / calls + 1, "user-\(index % calls)")
            let usage = frames[(seq - 1) % frames.count]
            let key = EventKey(callID: "\(prefix)-\(call)", seq: Int64(seq))
            return UsageEvent(key: key, userID: user, callStartedAt: BenchmarkPrices.callStart, usage: usage,
                              pricing: meters[call, default: CallBillingMeter()].price(usage, book: book),
                              payloadHash: PayloadHash(sha256Of: key.description))
        }
    }

    /// Events per second through `EventStore.commit` (COPY → INSERT … ON CONFLICT → journaled
    /// rollups) on `connections` connections in parallel, each committing its calls' share in
    /// batches, and the fold of everything they journaled (the server folds every few seconds).
    static func measureLimit(_ events: [UsageEvent], _ options: PostgresConnectionOptions, connections: Int, batch: Int) throws -> Double {
        var split = Array(repeating: [UsageEvent](), count: connections)
        for event in events { split[Int(UInt(bitPattern: event.key.callID.hashValue) % UInt(connections))].append(event) }
        let shares = split
        let failure = Mutex<(any Error)?>(nil)
        let started = ContinuousClock.now
        DispatchQueue.concurrentPerform(iterations: connections) { index in
            do {
                // Each worker opens its own connection (a few milliseconds inside the timing).
                let store = EventStore(connection: try PostgresConnection(options))
                var start = 0
                while start < shares[index].count {
                    _ = try store.commit(Array(shares[index][start..<min(start + batch, shares[index].count)]))
                    start += batch
                }
            } catch {
                failure.withLock { $0 = error }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
        try Rollups.fold(on: try PostgresConnection(options))
        return Double(events.count) / (ContinuousClock.now - started).seconds
    }

    /// Events per second as seed 002 writes them: one INSERT per event, autocommit.
    static func measureSeedDesign(_ events: [UsageEvent], _ connection: PostgresConnection) throws -> Double {
        let started = ContinuousClock.now
        for event in events {
            let priced: PricedUsage? = if case .priced(let priced) = event.pricing { priced } else { nil }
            try connection.query("""
                INSERT INTO api_call_events (call_id, seq, user_id, call_started_at, occurred_at, service, operation, model,
                    usage_amount, usage_unit, price_id, unit_cost, total_cost, payload_hash)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                """, [event.key.callID, event.key.seq, event.userID, event.callStartedAt, event.usage.occurredAt, event.usage.service,
                      event.usage.operation, event.usage.model, event.usage.amount, event.usage.unit.rawValue, priced?.priceID,
                      priced?.unitCost, priced?.totalCost, PostgresBytes(event.payloadHash.bytes)])
        }
        return Double(events.count) / (ContinuousClock.now - started).seconds
    }
}
