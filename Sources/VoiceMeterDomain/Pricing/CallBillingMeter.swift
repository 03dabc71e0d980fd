import Synchronization

/// The rounding VoiceMeter applies to money: costs are kept to 1e-10 USD, half-even.
public enum MoneyRounding {
    /// Digits after the point of every cost (`api_call_events.total_cost`, rollups).
    public static let costScale = 10
    /// Digits after the point of billed usage amounts.
    public static let usageScale = 9
    public static let rule = RoundingRule.halfEven
}

/// One usage frame's quantity, as the pricing engine needs it.
public struct MeteredUsage: Sendable, Hashable {
    public var service: String
    public var operation: String
    public var model: String?
    public var unit: UsageUnit
    /// A delta since the previous frame, never a running total; non-negative.
    public var amount: ExactDecimal
    /// When the usage happened: the price in force then applies.
    public var occurredAt: Timestamp

    public init(service: String, operation: String, model: String? = nil, unit: UsageUnit, amount: ExactDecimal, occurredAt: Timestamp) {
        self.service = service
        self.operation = operation
        self.model = model
        self.unit = unit
        self.amount = amount
        self.occurredAt = occurredAt
    }
}

/// What one frame costs.
public struct PricedUsage: Sendable, Hashable {
    /// The price version used (`service_pricing.id`).
    public var priceID: Int64
    /// The version's price per one unit of its own unit.
    public var unitCost: ExactDecimal
    /// This frame's cost in USD at `MoneyRounding.costScale`.
    public var totalCost: ExactDecimal
    /// The usage this frame was charged for after billing increments, in the frame's unit.
    public var billedAmount: ExactDecimal

    public init(priceID: Int64, unitCost: ExactDecimal, totalCost: ExactDecimal, billedAmount: ExactDecimal) {
        self.priceID = priceID
        self.unitCost = unitCost
        self.totalCost = totalCost
        self.billedAmount = billedAmount
    }
}

/// Why a frame could not be priced; it is stored unpriced and priced later.
public enum UnpricedReason: String, Sendable, Hashable {
    /// No version of any compatible price key is in force at the frame's time.
    case noPriceInForce = "no_price_in_force"
    /// The key is priced as a percentage of a charge (payments): priced from the call's revenue instead.
    case pricedFromRevenue = "priced_from_revenue"
    /// The amounts are beyond what exact arithmetic can carry (about 38 digits).
    case overflow
}

public enum PricingOutcome: Sendable, Hashable {
    case priced(PricedUsage)
    case unpriced(UnpricedReason)
}

/// The per-call billing state: usage accumulated per price key, so that billing increments
/// (Twilio's whole minutes) and per-minute prices of per-second usage are exact over the call.
///
/// A frame costs `cost(billed(usage after)) − cost(billed(usage before))` at the price version in
/// force at its time, each side rounded half-even at 1e-10 USD. Within a version the frame costs
/// telescope: a call's total is `cost(billed(total usage))` however its usage is split into frames
/// and in whatever order they arrive. The state is derivable from the call's stored events.
public struct CallBillingMeter: Sendable {
    /// Usage so far per price key. A call uses a handful of keys, so a linear search comparing
    /// (mostly small, inline) strings beats hashing them on every frame.
    private var usageByKey: [(key: PriceKey, usage: ExactDecimal)] = []
    /// Counts advances: a quote applies only to the state it was made against, which the meter's
    /// identity (shared by its copies) and this revision name.
    private var revision = 0
    private let identity = CallBillingMeter.identities.add(1, ordering: .relaxed).newValue
    private static let identities = Atomic<UInt64>(0)

    public init() {}

    /// A frame priced against the call's state without advancing it; `advance(with:)` takes it in.
    public struct Quote: Sendable {
        public let outcome: PricingOutcome
        /// How the state changes when the frame is taken in (`nil` when it stays unpriced).
        fileprivate let change: Change?
        fileprivate let meter: UInt64
        fileprivate let revision: Int
    }

    fileprivate enum Change {
        /// The key's usage becomes `usage` (at its place in `usageByKey`).
        case update(slot: Int, usage: ExactDecimal)
        /// The call's first usage of the key.
        case append(PriceKey, ExactDecimal)
    }

    /// Prices `usage` against `book` and advances the call's state (unless the frame stays unpriced).
    public mutating func price(_ usage: MeteredUsage, book: PriceBook) -> PricingOutcome {
        let quote = quote(usage, book: book)
        advance(with: quote)
        return quote.outcome
    }

    /// Prices `usage` with a known version (replaying stored events or repricing) and advances the state.
    public mutating func price(_ usage: MeteredUsage, with version: PriceVersion) -> PricingOutcome {
        let quote = quote(usage, with: version)
        advance(with: quote)
        return quote.outcome
    }

    /// What `usage` costs now, leaving the state as it is (metering advances it only once the
    /// ledger has taken the frame, without copying the state for every frame).
    public func quote(_ usage: MeteredUsage, book: PriceBook) -> Quote {
        guard let version = book.price(
            service: usage.service, operation: usage.operation, model: usage.model, unit: usage.unit, at: usage.occurredAt
        ) else { return Quote(outcome: .unpriced(.noPriceInForce), change: nil, meter: identity, revision: revision) }
        return quote(usage, with: version)
    }

    /// What `usage` costs at `version`, leaving the state as it is.
    public func quote(_ usage: MeteredUsage, with version: PriceVersion) -> Quote {
        guard case .perUnit(let unitPrice) = version.rule else { return Quote(outcome: .unpriced(.pricedFromRevenue), change: nil, meter: identity, revision: revision) }
        do throws(DecimalOverflow) {
            let slot = usageByKey.firstIndex { $0.key == version.key }
            let before = slot.map { usageByKey[$0].usage } ?? .zero
            let after = try before.adding(usage.unit.toBase(usage.amount))
            let billedBefore = try Self.billed(before, version)
            let billedAfter = try Self.billed(after, version)
            let cost = try Self.cost(billedAfter, version, unitPrice).subtracting(Self.cost(billedBefore, version, unitPrice))
            var billedDelta = try billedAfter.subtracting(billedBefore)
            if let secondsPerUnit = usage.unit.secondsPerUnit {
                billedDelta = try billedDelta.divided(by: secondsPerUnit, scale: MoneyRounding.usageScale, MoneyRounding.rule)
            }
            return Quote(outcome: .priced(PricedUsage(priceID: version.id, unitCost: unitPrice, totalCost: cost, billedAmount: billedDelta)),
                         change: slot.map { .update(slot: $0, usage: after) } ?? .append(version.key, after),
                         meter: identity, revision: revision)
        } catch {
            return Quote(outcome: .unpriced(.overflow), change: nil, meter: identity, revision: revision)
        }
    }

    /// Takes in a frame quoted against the current state (the next quote builds on it). A quote
    /// made by another meter, or before another frame was taken in, is a programming error, not a
    /// billing choice: it traps.
    public mutating func advance(with quote: Quote) {
        precondition(quote.meter == identity && quote.revision == revision, "a quote is taken in by the meter, and against the state, it was made for")
        guard let change = quote.change else { return }
        switch change {
        case .update(let slot, let usage): usageByKey[slot].usage = usage
        case .append(let key, let usage): usageByKey.append((key, usage))
        }
        revision += 1
    }

    /// Base-unit usage charged for `usage` base units: rounded up to the increment, at least the minimum.
    static func billed(_ usage: ExactDecimal, _ version: PriceVersion) throws(DecimalOverflow) -> ExactDecimal {
        guard usage > .zero else { return .zero }
        var billed = usage
        if let increment = version.billingIncrement { billed = try billed.roundedUp(toMultipleOf: increment) }
        if let minimum = version.minimumBillable, billed < minimum { billed = minimum }
        return billed
    }

    /// The cost of `billed` base units at `unitPrice` per unit of the version's unit, rounded once.
    static func cost(_ billed: ExactDecimal, _ version: PriceVersion, _ unitPrice: ExactDecimal) throws(DecimalOverflow) -> ExactDecimal {
        let exact = try billed.multiplied(by: unitPrice)
        let divisor = version.key.unit.secondsPerUnit ?? ExactDecimal(1)
        return try exact.divided(by: divisor, scale: MoneyRounding.costScale, MoneyRounding.rule)
    }
}

/// Payment processing fees (Stripe: 3.4% + $0.30), charged once per paid call on its revenue.
public enum PaymentFee {
    /// The fee for a charge of `amount` under a percent-plus-fixed version, rounded at 1e-10 USD;
    /// `nil` when the version is not a payment price or the amount is not positive.
    public static func fee(forCharge amount: ExactDecimal, version: PriceVersion) -> ExactDecimal? {
        guard case .percentPlusFixed(let percent, let fixed) = version.rule, amount > .zero else { return nil }
        do throws(DecimalOverflow) {
            let variable = try amount.multiplied(by: percent).divided(by: ExactDecimal(100), scale: MoneyRounding.costScale, MoneyRounding.rule)
            return try variable.adding(fixed).rounded(scale: MoneyRounding.costScale, MoneyRounding.rule)
        } catch {
            return nil
        }
    }
}
