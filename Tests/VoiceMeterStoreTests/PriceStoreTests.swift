import Foundation
import Logging
import PostgresClient
import Testing
import VoiceMeterDomain
import VoiceMeterStore
import VoiceMeterTestSupport

@Suite("Versioned prices in PostgreSQL")
struct PriceStoreTests {
    let connection: PostgresConnection
    let store: PriceStore

    init() throws {
        connection = try PostgresConnection(try TestPostgres.migratedDatabase())
        store = PriceStore(connection: connection)
    }

    private func at(_ text: String) -> Timestamp { Timestamp(rfc3339: text)! }

    private func change(price: String, from: String, service: String = "twilio", operation: String = "voice_outbound") throws -> PriceChange {
        try PriceInput.change(.init(service: service, operation: operation, unit: "minutes", price: price, increment: "60s", effectiveFrom: from), now: at(from))
    }

    @Test("set closes the open version and opens the new one at the same instant")
    func setClosesAndOpens() throws {
        let before = try store.load().price(service: "twilio", operation: "voice_outbound", model: nil, unit: .seconds, at: at("2026-11-22T18:00:00Z"))
        let opened = try store.set(change(price: "0.015", from: "2026-11-22T18:02:00Z"))
        let book = try store.load()
        let old = book.price(service: "twilio", operation: "voice_outbound", model: nil, unit: .seconds, at: at("2026-11-22T18:01:59.999999Z"))
        let new = book.price(service: "twilio", operation: "voice_outbound", model: nil, unit: .seconds, at: at("2026-11-22T18:02:00Z"))
        #expect(old?.id == before?.id)
        #expect(old?.effectiveTo == at("2026-11-22T18:02:00Z"))
        #expect(new?.id == opened.id)
        #expect(new?.rule == .perUnit(unitPrice: ExactDecimal("0.015")!))
        #expect(new?.billingIncrement == ExactDecimal(60))
    }

    @Test("a new version inside a closed one, or not after the open one's start, is refused")
    func pastIsNotRewritten() throws {
        try store.set(change(price: "0.015", from: "2026-12-01T00:00:00Z"))
        let inside = #expect(throws: PriceInputError.self) { try store.set(change(price: "0.02", from: "2026-06-01T00:00:00Z")) }
        #expect(inside?.description.contains("choose --effective-from at or after 2026-12-01T00:00:00Z") == true)
        let sameStart = #expect(throws: PriceInputError.self) { try store.set(change(price: "0.02", from: "2026-12-01T00:00:00Z")) }
        #expect(sameStart?.description.contains("later than 2026-12-01T00:00:00Z") == true)
        #expect(try store.load().versions.filter { $0.key.operation == "voice_outbound" }.count == 2)
    }

    @Test("an import applies every row or none")
    func importIsAtomic() throws {
        let good = try PriceFile.parseCSV("""
            service,operation,model,unit,price,effective_from
            deepgram,stt_streaming,nova-3,minutes,0.0077,2026-01-01T00:00:00Z
            cartesia,tts_generation,sonic,characters,0.00011,2026-01-01T00:00:00Z
            """, now: at("2026-01-01T00:00:00Z"))
        #expect(try store.importChanges(good).count == 2)
        let bad = try PriceFile.parseCSV("""
            service,operation,model,unit,price,effective_from
            deepgram,stt_streaming,nova-3,minutes,0.0080,2026-06-01T00:00:00Z
            cartesia,tts_generation,sonic,characters,0.00012,2025-06-01T00:00:00Z
            """, now: at("2026-01-01T00:00:00Z"))
        #expect(throws: PriceInputError.self) { try store.importChanges(bad) }
        let nova3 = try store.load().versions.filter { $0.key.model == "nova-3" }
        #expect(nova3.count == 1)
        #expect(nova3.first?.effectiveTo == nil)
    }

    @Test("a running watcher picks up a new version within a second, without a restart")
    func watcherReloadsOnNotify() throws {
        let watcher = try PriceBookWatcher(options: connection.options, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        watcher.start()
        defer { watcher.stop() }
        let instant = at("2026-11-22T18:02:00Z")
        #expect(watcher.book.price(service: "deepgram", operation: "stt_streaming", model: "nova-3", unit: .seconds, at: instant) == nil)

        let clock = ContinuousClock()
        let committed = clock.now
        let opened = try store.set(change(price: "0.0077", from: "2026-11-22T18:00:00Z", service: "deepgram", operation: "stt_streaming"))
        var seen: PriceVersion?
        while seen == nil, clock.now - committed < .seconds(1) {
            seen = watcher.book.price(service: "deepgram", operation: "stt_streaming", model: nil, unit: .seconds, at: instant)
            if seen == nil { usleep(5_000) }
        }
        #expect(seen?.id == opened.id)
    }
}
