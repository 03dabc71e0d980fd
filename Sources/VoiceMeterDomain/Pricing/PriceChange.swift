/// A new price version to open, as a person or a file states it.
public struct PriceChange: Sendable, Hashable {
    public var key: PriceKey
    public var rule: PricingRule
    /// In base units: seconds for time units, the unit itself otherwise.
    public var billingIncrement: ExactDecimal?
    public var minimumBillable: ExactDecimal?
    public var effectiveFrom: Timestamp

    public init(key: PriceKey, rule: PricingRule, billingIncrement: ExactDecimal? = nil,
                minimumBillable: ExactDecimal? = nil, effectiveFrom: Timestamp) {
        self.key = key
        self.rule = rule
        self.billingIncrement = billingIncrement
        self.minimumBillable = minimumBillable
        self.effectiveFrom = effectiveFrom
    }
}

/// Input that cannot become a price, with what to write instead.
public struct PriceInputError: Error, Hashable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Turns text (CLI flags, CSV rows, JSON objects) into validated price changes.
public enum PriceInput {
    /// The most decimal places a price may have (`service_pricing.unit_price` is NUMERIC(24,12)).
    public static let priceScaleMaximum = 12

    /// The fields of one price, as text; `nil` for fields not given.
    public struct Fields: Sendable {
        public var service: String
        public var operation: String
        public var model: String?
        public var unit: String
        public var price: String?
        public var increment: String?
        public var minimum: String?
        public var percentFee: String?
        public var fixedFee: String?
        public var effectiveFrom: String?

        public init(service: String, operation: String, model: String? = nil, unit: String, price: String? = nil,
                    increment: String? = nil, minimum: String? = nil, percentFee: String? = nil,
                    fixedFee: String? = nil, effectiveFrom: String? = nil) {
            self.service = service
            self.operation = operation
            self.model = model
            self.unit = unit
            self.price = price
            self.increment = increment
            self.minimum = minimum
            self.percentFee = percentFee
            self.fixedFee = fixedFee
            self.effectiveFrom = effectiveFrom
        }
    }

    /// Validates `fields`; a missing effective time means `now`.
    public static func change(_ fields: Fields, now: Timestamp) throws(PriceInputError) -> PriceChange {
        try checkName(fields.service, "service", maximumLength: 50)
        try checkName(fields.operation, "operation", maximumLength: 100)
        let model = fields.model ?? ""
        guard model.utf8.count <= 100 else { throw PriceInputError("model '\(model.prefix(20))…' is longer than 100 characters") }
        let unit = try self.unit(fields.unit)
        let effectiveFrom = try fields.effectiveFrom.map { (text: String) throws(PriceInputError) -> Timestamp in
            try timestamp(text)
        } ?? now
        let key = PriceKey(service: fields.service, operation: fields.operation, model: model, unit: unit)

        if fields.percentFee != nil || fields.fixedFee != nil {
            guard unit == .transactions else {
                throw PriceInputError("a percent or fixed fee prices payments: use --unit transactions (got \(unit.rawValue))")
            }
            guard fields.price == nil || (try? amount(fields.price!, "price"))?.isZero == true else {
                throw PriceInputError("give either --price (per unit) or --percent/--fixed (payment fee), not both")
            }
            let percent = try fields.percentFee.map { (text: String) throws(PriceInputError) in try amount(text, "percent fee") } ?? .zero
            guard percent <= ExactDecimal(100) else { throw PriceInputError("percent fee \(percent) is above 100; write 3.4 for 3.4%") }
            let fixed = try fields.fixedFee.map { (text: String) throws(PriceInputError) in try amount(text, "fixed fee") } ?? .zero
            return PriceChange(key: key, rule: .percentPlusFixed(percent: percent, fixed: fixed), effectiveFrom: effectiveFrom)
        }

        guard let priceText = fields.price else {
            throw PriceInputError("no price given: add --price USD_PER_UNIT (for example --price 0.014 with --unit minutes)")
        }
        let price = try amount(priceText, "price")
        let increment = try fields.increment.map { (text: String) throws(PriceInputError) in try quantity(text, unit: unit, name: "increment") }
        let minimum = try fields.minimum.map { (text: String) throws(PriceInputError) in try quantity(text, unit: unit, name: "minimum") }
        return PriceChange(key: key, rule: .perUnit(unitPrice: price), billingIncrement: increment, minimumBillable: minimum, effectiveFrom: effectiveFrom)
    }

    /// A protocol unit name, or an error listing them.
    public static func unit(_ text: String) throws(PriceInputError) -> UsageUnit {
        guard let unit = UsageUnit(rawValue: text) else {
            throw PriceInputError("unknown unit '\(text)'; use one of: \(UsageUnit.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return unit
    }

    /// An RFC 3339 time, or an error with an example.
    public static func timestamp(_ text: String) throws(PriceInputError) -> Timestamp {
        guard let instant = Timestamp(rfc3339: text) else {
            throw PriceInputError("'\(text)' is not an RFC 3339 time; write for example 2026-12-01T00:00:00Z")
        }
        return instant
    }

    /// A non-negative money amount with at most 12 decimal places.
    static func amount(_ text: String, _ name: String) throws(PriceInputError) -> ExactDecimal {
        guard let value = ExactDecimal(text) else {
            throw PriceInputError("\(name) '\(text)' is not a decimal number; write for example 0.0059")
        }
        guard !value.isNegative else { throw PriceInputError("\(name) \(text) is negative; prices and fees are zero or more") }
        guard value.normalized.scale <= priceScaleMaximum else {
            throw PriceInputError("\(name) \(text) has more than \(priceScaleMaximum) decimal places; quote it per unit with at most \(priceScaleMaximum)")
        }
        return value
    }

    /// An increment or minimum: `60s`/`1m` for time units (stored in seconds), a plain count otherwise.
    static func quantity(_ text: String, unit: UsageUnit, name: String) throws(PriceInputError) -> ExactDecimal {
        var number = Substring(text)
        var multiplier = ExactDecimal(1)
        if unit.secondsPerUnit != nil {
            switch number.last {
            case "s": number = number.dropLast()
            case "m": number = number.dropLast(); multiplier = ExactDecimal(60)
            default: throw PriceInputError("\(name) '\(text)' needs a time suffix for unit \(unit.rawValue): write 60s or 1m")
            }
        }
        guard let value = ExactDecimal(number), value > .zero, let scaled = try? value.multiplied(by: multiplier) else {
            throw PriceInputError("\(name) '\(text)' must be a positive number\(unit.secondsPerUnit != nil ? " with s or m, like 60s" : "")")
        }
        return scaled
    }

    private static func checkName(_ text: String, _ field: String, maximumLength: Int) throws(PriceInputError) {
        let allowed = text.utf8.allSatisfy { byte in
            (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39) || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
        }
        guard !text.isEmpty, text.utf8.count <= maximumLength, allowed else {
            throw PriceInputError("\(field) '\(text)' must be 1 to \(maximumLength) lowercase letters, digits, '_', '.' or '-' (like twilio or voice_outbound)")
        }
    }
}
