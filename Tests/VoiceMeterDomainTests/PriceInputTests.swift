import Testing
import VoiceMeterDomain

@Suite("Price input: what people type and files say")
struct PriceInputTests {
    let now = Timestamp(rfc3339: "2026-11-22T18:00:00Z")!

    private func fields(unit: String = "minutes", price: String? = "0.014", increment: String? = nil, percent: String? = nil,
                        fixed: String? = nil, from: String? = nil) -> PriceInput.Fields {
        .init(service: "twilio", operation: "voice_outbound", unit: unit, price: price, increment: increment,
              percentFee: percent, fixedFee: fixed, effectiveFrom: from)
    }

    @Test("increments take s or m for time units and are stored in seconds")
    func increments() throws {
        #expect(try PriceInput.change(fields(increment: "1m"), now: now).billingIncrement == ExactDecimal(60))
        #expect(try PriceInput.change(fields(increment: "60s"), now: now).billingIncrement == ExactDecimal(60))
        #expect(try PriceInput.change(fields(unit: "characters", increment: "1000"), now: now).billingIncrement == ExactDecimal(1000))
    }

    @Test("a missing effective time means now")
    func defaultEffectiveFrom() throws {
        #expect(try PriceInput.change(fields(), now: now).effectiveFrom == now)
    }

    @Test("a payment fee is a percent plus a fixed amount per transaction")
    func paymentFee() throws {
        let change = try PriceInput.change(.init(service: "stripe", operation: "payment", model: "card", unit: "transactions",
                                                 percentFee: "3.4", fixedFee: "0.30"), now: now)
        #expect(change.rule == .percentPlusFixed(percent: ExactDecimal("3.4")!, fixed: ExactDecimal("0.3")!))
    }

    @Test("bad input is refused with what to write instead", arguments: [
        (PriceInput.Fields(service: "twilio", operation: "voice_outbound", unit: "hours", price: "0.8"), "use one of: seconds, minutes"),
        (PriceInput.Fields(service: "twilio", operation: "voice_outbound", unit: "minutes", price: "-0.014"), "is negative"),
        (PriceInput.Fields(service: "twilio", operation: "voice_outbound", unit: "minutes", price: "0.014$"), "write for example 0.0059"),
        (PriceInput.Fields(service: "twilio", operation: "voice_outbound", unit: "minutes", price: "0.0000000000001"), "more than 12 decimal places"),
        (PriceInput.Fields(service: "twilio", operation: "voice_outbound", unit: "minutes", price: "0.014", increment: "60"), "write 60s or 1m"),
        (PriceInput.Fields(service: "twilio", operation: "voice_outbound", unit: "minutes", price: "0.014", increment: "0s"), "positive number"),
        (PriceInput.Fields(service: "twilio", operation: "voice_outbound", unit: "minutes"), "add --price"),
        (PriceInput.Fields(service: "Twilio", operation: "voice_outbound", unit: "minutes", price: "1"), "lowercase letters"),
        (PriceInput.Fields(service: "twilio", operation: "voice_outbound", unit: "minutes", price: "1", effectiveFrom: "tomorrow"), "2026-12-01T00:00:00Z"),
        (PriceInput.Fields(service: "stripe", operation: "payment", unit: "minutes", percentFee: "3.4"), "use --unit transactions"),
        (PriceInput.Fields(service: "stripe", operation: "payment", unit: "transactions", percentFee: "340"), "write 3.4 for 3.4%"),
    ])
    func refused(fields: PriceInput.Fields, hint: String) {
        let error = #expect(throws: PriceInputError.self) { try PriceInput.change(fields, now: now) }
        #expect(error?.description.contains(hint) == true, "\(error?.description ?? "no error") should contain '\(hint)'")
    }

    @Test("CSV and JSON files give the same changes; JSON numbers stay exact")
    func files() throws {
        let csv = try PriceFile.parse("""
            # prices for December
            service,operation,model,unit,price,increment,effective_from
            deepgram,stt_streaming,nova-3,minutes,0.0077,1s,2026-12-01T00:00:00Z
            cerebras,chat_completion,llama-4,tokens,0.00000011,,2026-12-01T00:00:00Z
            """, now: now)
        let json = try PriceFile.parse("""
            [{"service": "deepgram", "operation": "stt_streaming", "model": "nova-3", "unit": "minutes",
              "price": 0.0077, "increment": "1s", "effective_from": "2026-12-01T00:00:00Z"},
             {"service": "cerebras", "operation": "chat_completion", "model": "llama-4", "unit": "tokens",
              "price": 1.1e-7, "effective_from": "2026-12-01T00:00:00Z"}]
            """, now: now)
        #expect(csv == json)
        #expect(csv.count == 2)
        #expect(csv[1].rule == .perUnit(unitPrice: ExactDecimal("0.00000011")!))
    }

    @Test("file errors name the line or entry", arguments: [
        ("service,operation,unit,price\ntwilio,voice_outbound,minutes\n", "line 2"),
        ("service,operation,unit,cost\n", "unknown column 'cost'"),
        ("service,operation,unit,price\ntwilio,voice_outbound,furlongs,1\n", "line 2: unknown unit"),
        ("[{\"service\": \"twilio\"}]", "entry 0: 'operation' is missing"),
        ("[{\"service\": \"twilio\", \"operation\": \"voice_outbound\", \"unit\": \"minutes\", \"price\": [1]}]", "must be a string or a number"),
        ("[1, 2", "not valid JSON"),
    ])
    func fileErrors(text: String, hint: String) {
        let error = #expect(throws: PriceInputError.self) { try PriceFile.parse(text, now: now) }
        #expect(error?.description.contains(hint) == true, "\(error?.description ?? "no error") should contain '\(hint)'")
    }
}
