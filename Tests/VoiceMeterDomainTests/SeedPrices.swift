import VoiceMeterDomain

/// The seed 002 prices (as in Migrations/0002_seed_prices.sql), for hand-computed expectations.
enum SeedPrices {
    static let start = Timestamp(rfc3339: "2025-01-01T00:00:00Z")!

    static func perUnit(_ id: Int64, _ service: String, _ operation: String, _ model: String, _ unit: UsageUnit,
                        _ price: String, increment: String? = nil, from: Timestamp = start, to: Timestamp? = nil) -> PriceVersion {
        PriceVersion(
            id: id, key: PriceKey(service: service, operation: operation, model: model, unit: unit),
            rule: .perUnit(unitPrice: ExactDecimal(price)!), billingIncrement: increment.flatMap { ExactDecimal($0) },
            effectiveFrom: from, effectiveTo: to
        )
    }

    static let twilioOutbound = perUnit(1, "twilio", "voice_outbound", "", .minutes, "0.014", increment: "60")
    static let deepgram = perUnit(3, "deepgram", "stt_streaming", "nova-2", .minutes, "0.0059", increment: "1")
    static let cerebras8b = perUnit(4, "cerebras", "chat_completion", "llama3.1-8b", .tokens, "0.0000001")
    static let gpt4Input = perUnit(8, "openai", "chat_completion", "gpt-4-turbo", .inputTokens, "0.00001")
    static let gpt4Output = perUnit(9, "openai", "chat_completion", "gpt-4-turbo", .outputTokens, "0.00003")
    static let elevenTurbo = perUnit(10, "elevenlabs", "tts_generation", "eleven_turbo_v2_5", .characters, "0.00015")
    static let elevenStandard = perUnit(11, "elevenlabs", "tts_generation", "", .characters, "0.0003")
    static let stripeCard = PriceVersion(
        id: 12, key: PriceKey(service: "stripe", operation: "payment", model: "card", unit: .transactions),
        rule: .percentPlusFixed(percent: ExactDecimal("3.4")!, fixed: ExactDecimal("0.30")!), effectiveFrom: start
    )

    static let book = PriceBook([twilioOutbound, deepgram, cerebras8b, gpt4Input, gpt4Output, elevenTurbo, elevenStandard, stripeCard])
}
