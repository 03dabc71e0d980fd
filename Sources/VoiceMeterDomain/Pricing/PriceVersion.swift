/// What a price is for: a service's operation, optionally for one model, per unit.
/// `model` is `""` for the service/operation default used when no model-specific price exists.
public struct PriceKey: Sendable, Hashable, CustomStringConvertible {
    public var service: String
    public var operation: String
    public var model: String
    public var unit: UsageUnit

    public init(service: String, operation: String, model: String = "", unit: UsageUnit) {
        self.service = service
        self.operation = operation
        self.model = model
        self.unit = unit
    }

    public var description: String {
        "\(service)/\(operation)\(model.isEmpty ? "" : "/" + model) per \(unit.rawValue)"
    }
}

/// How a price turns usage into money.
public enum PricingRule: Sendable, Hashable {
    /// `unitPrice` USD per one unit of the key's unit.
    case perUnit(unitPrice: ExactDecimal)
    /// A payment fee: `percent` % of the charged amount plus `fixed`, once per transaction.
    case percentPlusFixed(percent: ExactDecimal, fixed: ExactDecimal)
}

/// One version of one price, in force on `[effectiveFrom, effectiveTo)`.
public struct PriceVersion: Sendable, Hashable {
    /// The `service_pricing.id` recorded on every event priced with this version.
    public var id: Int64
    public var key: PriceKey
    public var rule: PricingRule
    /// Per call, usage is billed in whole increments rounded up, in base units (seconds for time).
    public var billingIncrement: ExactDecimal?
    /// The least a call is billed once it has any usage of this key, in base units.
    public var minimumBillable: ExactDecimal?
    public var effectiveFrom: Timestamp
    public var effectiveTo: Timestamp?

    public init(
        id: Int64, key: PriceKey, rule: PricingRule, billingIncrement: ExactDecimal? = nil,
        minimumBillable: ExactDecimal? = nil, effectiveFrom: Timestamp, effectiveTo: Timestamp? = nil
    ) {
        self.id = id
        self.key = key
        self.rule = rule
        self.billingIncrement = billingIncrement
        self.minimumBillable = minimumBillable
        self.effectiveFrom = effectiveFrom
        self.effectiveTo = effectiveTo
    }

    /// Whether this version is in force at `instant`.
    public func isInForce(at instant: Timestamp) -> Bool {
        effectiveFrom <= instant && (effectiveTo.map { instant < $0 } ?? true)
    }
}
