import Testing
import VoiceMeterDomain

@Suite("Pricing: seed 002's canonical call and provider billing rules")
struct PricingTests {
    let callStart = Timestamp(rfc3339: "2026-11-22T18:00:00Z")!
    private func d(_ text: String) -> ExactDecimal { ExactDecimal(text)! }

    private func usage(_ service: String, _ operation: String, _ model: String?, _ unit: UsageUnit, _ amount: String, at offset: Int64) -> MeteredUsage {
        MeteredUsage(service: service, operation: operation, model: model, unit: unit, amount: d(amount), occurredAt: callStart.adding(seconds: offset))
    }

    /// Prices frames in order on one call and returns each frame's cost.
    private func costs(_ frames: [MeteredUsage], book: PriceBook = SeedPrices.book) -> [ExactDecimal] {
        var meter = CallBillingMeter()
        return frames.map { frame in
            guard case .priced(let priced) = meter.price(frame, book: book) else {
                Issue.record("frame \(frame) was not priced")
                return .zero
            }
            return priced.totalCost
        }
    }

    private func sum(_ values: [ExactDecimal]) throws -> ExactDecimal {
        try values.reduce(.zero) { try $0.adding($1) }
    }

    /// Seed 002's 5-minute call as a pipeline streams it.
    private var canonicalCall: [MeteredUsage] {
        var frames: [MeteredUsage] = []
        for index in 1...10 { frames.append(usage("twilio", "voice_outbound", nil, .seconds, "30", at: Int64(index) * 30)) }
        for index in 1...30 { frames.append(usage("deepgram", "stt_streaming", "nova-2", .seconds, "10", at: Int64(index) * 10)) }
        for turn in 1...5 {
            frames.append(usage("cerebras", "chat_completion", "llama3.1-8b", .inputTokens, "6000", at: Int64(turn) * 60 - 5))
            frames.append(usage("cerebras", "chat_completion", "llama3.1-8b", .outputTokens, "4000", at: Int64(turn) * 60 - 4))
        }
        for index in 1...20 { frames.append(usage("elevenlabs", "tts_generation", "eleven_turbo_v2_5", .characters, "100", at: Int64(index) * 15)) }
        return frames
    }

    @Test("a copy of a book is the same book; a book built again from the same versions is another")
    func bookIdentity() {
        let book = SeedPrices.book
        let copy = book
        #expect(copy.isIdentical(to: book))
        #expect(!PriceBook(book.versions).isIdentical(to: book))
    }

    @Test("the canonical 5-minute call costs exactly 0.07 + 0.0295 + 0.005 + 0.30 = 0.4045")
    func canonicalCallTotal() throws {
        let frames = canonicalCall
        let perFrame = costs(frames)
        let byService = Dictionary(grouping: zip(frames, perFrame), by: { $0.0.service })
            .mapValues { try! sum($0.map(\.1)) }
        #expect(byService["twilio"] == d("0.07"))
        #expect(byService["deepgram"] == d("0.0295"))
        #expect(byService["cerebras"] == d("0.005"))
        #expect(byService["elevenlabs"] == d("0.3"))
        #expect(try sum(perFrame) == d("0.4045"))
    }

    @Test("its $4.99 card payment fee is exactly 0.46966 (seed's 0.475 is an arithmetic slip)")
    func paymentFee() {
        #expect(PaymentFee.fee(forCharge: d("4.99"), version: SeedPrices.stripeCard) == d("0.46966"))
        #expect(PaymentFee.fee(forCharge: d("0"), version: SeedPrices.stripeCard) == nil)
        #expect(PaymentFee.fee(forCharge: d("4.99"), version: SeedPrices.twilioOutbound) == nil)
    }

    @Test("Twilio bills whole minutes: the first 30 s frame of each minute costs $0.014, the second $0")
    func twilioIncrements() throws {
        let frames = (1...4).map { usage("twilio", "voice_outbound", nil, .seconds, "30", at: Int64($0) * 30) }
        #expect(costs(frames) == [d("0.014"), d("0"), d("0.014"), d("0")])
    }

    @Test("a quote leaves the call's billing state alone until it is taken in (a frame the ledger refused is not billed)")
    func quoteThenAdvance() {
        let first = usage("twilio", "voice_outbound", nil, .seconds, "30", at: 30)
        let second = usage("twilio", "voice_outbound", nil, .seconds, "30", at: 60)
        var meter = CallBillingMeter()
        func cost(_ quote: CallBillingMeter.Quote) -> ExactDecimal? {
            if case .priced(let priced) = quote.outcome { priced.totalCost } else { nil }
        }
        #expect(cost(meter.quote(first, book: SeedPrices.book)) == d("0.014"))
        // Not taken in: the same frame still opens the minute.
        let quote = meter.quote(first, book: SeedPrices.book)
        #expect(cost(quote) == d("0.014"))
        meter.advance(with: quote)
        #expect(cost(meter.quote(second, book: SeedPrices.book)) == d("0"))
        meter.advance(with: meter.quote(second, book: SeedPrices.book))
        #expect(cost(meter.quote(first, book: SeedPrices.book)) == d("0.014"))
    }

    @Test("a 301 s Twilio call costs 6 minutes")
    func twilio301Seconds() throws {
        let frames = [usage("twilio", "voice_outbound", nil, .seconds, "300", at: 300), usage("twilio", "voice_outbound", nil, .seconds, "1", at: 301)]
        #expect(try sum(costs(frames)) == d("0.084"))
        #expect(costs(frames).last == d("0.014"))
    }

    @Test("usage in minutes is converted exactly: 2.5 minutes of Twilio bills 3")
    func minutesUsage() throws {
        #expect(costs([usage("twilio", "voice_outbound", nil, .minutes, "2.5", at: 150)]) == [d("0.042")])
    }

    @Test("a price change at 18:02:00 prices 18:01:59 with the old version and 18:02:00 with the new")
    func priceChangeBoundary() throws {
        let change = Timestamp(rfc3339: "2026-11-22T18:02:00Z")!
        let old = SeedPrices.perUnit(20, "elevenlabs", "tts_generation", "eleven_turbo_v2_5", .characters, "0.00015", to: change)
        let new = SeedPrices.perUnit(21, "elevenlabs", "tts_generation", "eleven_turbo_v2_5", .characters, "0.0002", from: change)
        let book = PriceBook([old, new])
        var meter = CallBillingMeter()
        let before = meter.price(usage("elevenlabs", "tts_generation", "eleven_turbo_v2_5", .characters, "1000", at: 119), book: book)
        let after = meter.price(usage("elevenlabs", "tts_generation", "eleven_turbo_v2_5", .characters, "1000", at: 120), book: book)
        guard case .priced(let first) = before, case .priced(let second) = after else {
            Issue.record("both frames must be priced")
            return
        }
        #expect(first.priceID == 20)
        #expect(first.totalCost == d("0.15"))
        #expect(second.priceID == 21)
        #expect(second.totalCost == d("0.2"))
    }

    @Test("a model's own price wins; an unknown model falls back to the service default")
    func modelFallback() throws {
        var meter = CallBillingMeter()
        let turbo = meter.price(usage("elevenlabs", "tts_generation", "eleven_turbo_v2_5", .characters, "1000", at: 1), book: SeedPrices.book)
        let unknown = meter.price(usage("elevenlabs", "tts_generation", "eleven_v3_alpha", .characters, "1000", at: 2), book: SeedPrices.book)
        #expect(turbo == .priced(PricedUsage(priceID: 10, unitCost: d("0.00015"), totalCost: d("0.15"), billedAmount: d("1000"))))
        guard case .priced(let fallback) = unknown else { Issue.record("expected the default price"); return }
        #expect(fallback.priceID == 11)
        #expect(fallback.totalCost == d("0.3"))
    }

    @Test("split input and output token prices apply separately (GPT-4 Turbo fallback)")
    func splitTokenPrices() throws {
        let frames = [
            usage("openai", "chat_completion", "gpt-4-turbo", .inputTokens, "30000", at: 10),
            usage("openai", "chat_completion", "gpt-4-turbo", .outputTokens, "20000", at: 11),
        ]
        #expect(costs(frames) == [d("0.3"), d("0.6")])
    }

    @Test("usage with no price in force, or before any price, is unpriced, never dropped or zero-priced")
    func unpriced() {
        var meter = CallBillingMeter()
        #expect(meter.price(usage("deepgram", "stt_streaming", "nova-3", .seconds, "10", at: 1), book: SeedPrices.book) == .unpriced(.noPriceInForce))
        let early = MeteredUsage(service: "twilio", operation: "voice_outbound", unit: .seconds, amount: d("30"), occurredAt: Timestamp(rfc3339: "2024-12-31T23:59:59Z")!)
        #expect(meter.price(early, book: SeedPrices.book) == .unpriced(.noPriceInForce))
        #expect(meter.price(usage("twilio", "voice_outbound", nil, .characters, "10", at: 1), book: SeedPrices.book) == .unpriced(.noPriceInForce))
        #expect(meter.price(usage("stripe", "payment", "card", .transactions, "1", at: 1), book: SeedPrices.book) == .unpriced(.pricedFromRevenue))
    }

    @Test("a minimum billable quantity charges the minimum once, then nothing until it is exceeded")
    func minimumBillable() throws {
        let version = PriceVersion(
            id: 30, key: PriceKey(service: "sms", operation: "send", unit: .requests), rule: .perUnit(unitPrice: d("0.01")),
            minimumBillable: d("10"), effectiveFrom: SeedPrices.start
        )
        let frames = (1...12).map { usage("sms", "send", nil, .requests, "1", at: Int64($0)) }
        let perFrame = costs(frames, book: PriceBook([version]))
        #expect(perFrame.first == d("0.1"))
        #expect(perFrame[1..<10].allSatisfy { $0 == .zero })
        #expect(perFrame[10] == d("0.01"))
    }
}

@Suite("Pricing properties")
struct PricingPropertyTests {
    private func d(_ text: String) -> ExactDecimal { ExactDecimal(text)! }

    private func total(_ frames: [MeteredUsage]) -> ExactDecimal {
        var meter = CallBillingMeter()
        var sum = ExactDecimal.zero
        for frame in frames {
            if case .priced(let priced) = meter.price(frame, book: SeedPrices.book) { sum = try! sum.adding(priced.totalCost) }
        }
        return sum
    }

    /// Splits `total` (a whole number of milli-units) into 1…20 random positive parts with up to 3 decimals.
    private func split(milli total: Int, using random: inout SeededRandom) -> [ExactDecimal] {
        let parts = Int.random(in: 1...20, using: &random)
        var cuts = (0..<parts - 1).map { _ in Int.random(in: 0...total, using: &random) }.sorted()
        cuts.insert(0, at: 0)
        cuts.append(total)
        return zip(cuts, cuts.dropFirst()).map { ExactDecimal(significand: Int128($1 - $0), scale: 3) }
    }

    @Test("a call's total never depends on how its usage is split into frames or their order", arguments: 0..<200)
    func splittingAndOrder(seed: Int) {
        var random = SeededRandom(seed: UInt64(seed))
        let start = Timestamp(rfc3339: "2026-11-22T18:00:00Z")!
        let shapes: [(String, String, String?, UsageUnit, Int)] = [
            ("twilio", "voice_outbound", nil, .seconds, Int.random(in: 1...900_000, using: &random)),
            ("deepgram", "stt_streaming", "nova-2", .seconds, Int.random(in: 1...900_000, using: &random)),
            ("cerebras", "chat_completion", "llama3.1-8b", .tokens, Int.random(in: 1...90_000_000, using: &random)),
            ("elevenlabs", "tts_generation", "eleven_turbo_v2_5", .characters, Int.random(in: 1...9_000_000, using: &random)),
        ]
        var whole: [MeteredUsage] = []
        var pieces: [MeteredUsage] = []
        for (service, operation, model, unit, milli) in shapes {
            whole.append(MeteredUsage(service: service, operation: operation, model: model, unit: unit,
                                      amount: ExactDecimal(significand: Int128(milli), scale: 3), occurredAt: start))
            for part in split(milli: milli, using: &random) {
                pieces.append(MeteredUsage(service: service, operation: operation, model: model, unit: unit, amount: part, occurredAt: start))
            }
        }
        pieces.shuffle(using: &random)
        #expect(total(pieces) == total(whole))
    }

    @Test("repricing prices what was unpriced, matches pricing live, and is idempotent", arguments: 0..<100)
    func repricingIsIdempotent(seed: Int) {
        var random = SeededRandom(seed: UInt64(seed) &+ 10_000)
        let start = Timestamp(rfc3339: "2026-11-22T18:00:00Z")!
        var events: [StoredUsageEvent] = []
        for seq in 1...Int64.random(in: 1...40, using: &random) {
            let isTwilio = Bool.random(using: &random)
            let usage = MeteredUsage(
                service: isTwilio ? "twilio" : "deepgram", operation: isTwilio ? "voice_outbound" : "stt_streaming",
                model: isTwilio ? nil : "nova-2", unit: .seconds,
                amount: ExactDecimal(Int.random(in: 1...45, using: &random)), occurredAt: start.adding(seconds: seq)
            )
            events.append(StoredUsageEvent(seq: seq, usage: usage, priceID: nil))
        }
        // Live pricing of the same frames in seq order is the reference.
        var meter = CallBillingMeter()
        let live = events.map { meter.price($0.usage, book: SeedPrices.book) }

        let first = Repricing.reprice(callEvents: events, book: SeedPrices.book)
        #expect(events.map { first[$0.seq].map(PricingOutcome.priced) } == live.map { Optional($0) })

        let updated = events.map { StoredUsageEvent(seq: $0.seq, usage: $0.usage, priceID: first[$0.seq]?.priceID) }
        #expect(Repricing.reprice(callEvents: updated, book: SeedPrices.book).isEmpty)
    }

    @Test("repricing continues a call's billing state: a minute already paid is not paid twice")
    func repricingContinuesState() {
        let start = Timestamp(rfc3339: "2026-11-22T18:00:00Z")!
        func twilio(_ seq: Int64) -> MeteredUsage {
            MeteredUsage(service: "twilio", operation: "voice_outbound", unit: .seconds, amount: d("30"), occurredAt: start.adding(seconds: seq * 30))
        }
        let events = [
            StoredUsageEvent(seq: 1, usage: twilio(1), priceID: 1),
            StoredUsageEvent(seq: 2, usage: twilio(2), priceID: nil),
            StoredUsageEvent(seq: 3, usage: twilio(3), priceID: nil),
        ]
        let repriced = Repricing.reprice(callEvents: events, book: SeedPrices.book)
        #expect(repriced[2]?.totalCost == .zero)
        #expect(repriced[3]?.totalCost == d("0.014"))
    }
}
