import PostgresClient
import Testing
import VoiceMeterTestSupport

@Suite("Schema v1 constraints")
struct SchemaTests {
    let connection: PostgresConnection

    init() throws {
        connection = try PostgresConnection(try TestPostgres.migratedDatabase())
    }

    private func insertPrice(from: String, to: String?, model: String = "nova-3") throws {
        try connection.query("""
            INSERT INTO service_pricing (service, operation, model, unit, unit_price, effective_from, effective_to)
            VALUES ('deepgram', 'stt_streaming', $1, 'minutes', 0.0077, $2, $3)
            """, [model, from, to])
    }

    @Test("two versions of one price key cannot overlap in time")
    func overlappingPricesAreRejected() throws {
        try insertPrice(from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z")
        let error = #expect(throws: PostgresError.self) {
            try insertPrice(from: "2026-01-31T23:59:59Z", to: nil)
        }
        #expect(error?.sqlState == .exclusionViolation)
        #expect(error?.constraint == "service_pricing_no_overlap")
    }

    @Test("back-to-back versions and other models are allowed")
    func adjacentVersionsAreAllowed() throws {
        try insertPrice(from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z")
        try insertPrice(from: "2026-02-01T00:00:00Z", to: nil)
        try insertPrice(from: "2026-01-15T00:00:00Z", to: nil, model: "nova-3-medical")
        let count = try connection.query("SELECT count(*) AS n FROM service_pricing WHERE model LIKE 'nova-3%'").single()
        #expect(try count.decode("n", as: Int.self) == 3)
    }

    @Test("seed prices are stored exactly as seed 002 states them")
    func seedPrices() throws {
        let rows = try connection.query("""
            SELECT service || '/' || operation || '/' || model || '/' || unit AS key,
                   unit_price::text AS price, percent_fee::text AS percent, fixed_fee::text AS fixed,
                   billing_increment::text AS increment
            FROM service_pricing WHERE source = 'seed' AND effective_from = '2025-01-01T00:00:00Z'
            """)
        var prices: [String: (String, String, String, String?)] = [:]
        for row in rows {
            prices[try row.decode("key")] = (
                try row.decode("price"), try row.decode("percent"), try row.decode("fixed"), try row.decodeIfPresent("increment")
            )
        }
        func price(_ key: String) -> String? { prices[key].map { ExactText.trim($0.0) } }
        #expect(price("twilio/voice_outbound//minutes") == "0.014")
        #expect(prices["twilio/voice_outbound//minutes"]?.3.map(ExactText.trim) == "60")
        #expect(price("twilio/voice_inbound//minutes") == "0.0085")
        #expect(price("deepgram/stt_streaming/nova-2/minutes") == "0.0059")
        #expect(price("cerebras/chat_completion/llama3.1-8b/tokens") == "0.0000001")
        #expect(price("openai/chat_completion/gpt-4-turbo/input_tokens") == "0.00001")
        #expect(price("openai/chat_completion/gpt-4-turbo/output_tokens") == "0.00003")
        #expect(price("elevenlabs/tts_generation/eleven_turbo_v2_5/characters") == "0.00015")
        #expect(price("elevenlabs/tts_generation/eleven_multilingual_v2/characters") == "0.0003")
        #expect(prices["stripe/payment/card/transactions"].map { "\(ExactText.trim($0.1))% + \(ExactText.trim($0.2))" } == "3.4% + 0.3")
        let fixed = try connection.query("SELECT name, monthly_amount::text AS amount FROM fixed_costs ORDER BY name")
        #expect(try fixed.map { "\(try $0.decode("name", as: String.self))=\(ExactText.trim(try $0.decode("amount")))" } == ["raindrop=20", "vultr=6"])
    }

    @Test("an event's price columns are all set or all NULL (unpriced)")
    func eventPricedShape() throws {
        let error = #expect(throws: PostgresError.self) {
            try connection.query("""
                INSERT INTO api_call_events (call_id, seq, user_id, call_started_at, occurred_at, service, operation,
                    usage_amount, usage_unit, total_cost, payload_hash)
                VALUES ('CA1', 1, 'u1', '2026-11-22T18:00:00Z', '2026-11-22T18:00:30Z', 'twilio', 'voice_outbound', 30, 'seconds', 0.014, $1)
                """, [PostgresBytes(Array(repeating: 7, count: 32))])
        }
        #expect(error?.sqlState == .checkViolation)
        #expect(error?.constraint == "api_call_events_priced_shape")
    }

    @Test("changing prices announces itself on the service_pricing channel")
    func priceChangesNotify() throws {
        let listener = try PostgresConnection(connection.options)
        try listener.listen("service_pricing")
        try insertPrice(from: "2026-03-01T00:00:00Z", to: nil)
        #expect(try listener.waitForNotifications(timeoutMilliseconds: 5_000).map(\.channel) == ["service_pricing"])
    }
}

/// NUMERIC text with insignificant trailing zeros removed, for comparing to the seed's figures.
enum ExactText {
    static func trim(_ text: String) -> String {
        guard text.contains(".") else { return text }
        var trimmed = Substring(text)
        while trimmed.hasSuffix("0") { trimmed = trimmed.dropLast() }
        if trimmed.hasSuffix(".") { trimmed = trimmed.dropLast() }
        return String(trimmed)
    }
}

@Suite("Price history")
struct PriceHistoryTests {
    @Test("price versions cannot be deleted, so no event's price_id can dangle")
    func pricesAreNotDeleted() throws {
        let connection = try PostgresConnection(try TestPostgres.migratedDatabase())
        let error = #expect(throws: PostgresError.self) { try connection.query("DELETE FROM service_pricing WHERE service = 'twilio'") }
        #expect(error?.sqlState == SQLState("23001"))
        #expect(error?.hint?.contains("effective_to") == true)
    }
}
