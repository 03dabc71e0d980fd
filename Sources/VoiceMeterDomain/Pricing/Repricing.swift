/// A stored usage event of one call, as repricing sees it.
public struct StoredUsageEvent: Sendable, Hashable {
    public var seq: Int64
    public var usage: MeteredUsage
    /// The version that priced it, or `nil` while it is unpriced.
    public var priceID: Int64?

    public init(seq: Int64, usage: MeteredUsage, priceID: Int64?) {
        self.seq = seq
        self.usage = usage
        self.priceID = priceID
    }
}

/// Prices a call's unpriced events once a price exists, continuing the call's billing state.
public enum Repricing {
    /// New prices for the events of one call that are unpriced and can now be priced, by `seq`.
    ///
    /// Events are replayed in `seq` order: priced ones advance the billing state with the version
    /// they were priced with, unpriced ones are priced against `book`. Events that are already
    /// priced are never changed, so repricing twice changes nothing the second time.
    public static func reprice(callEvents: [StoredUsageEvent], book: PriceBook) -> [Int64: PricedUsage] {
        var meter = CallBillingMeter()
        var repriced: [Int64: PricedUsage] = [:]
        for event in callEvents.sorted(by: { $0.seq < $1.seq }) {
            if let priceID = event.priceID {
                if let version = book.version(id: priceID) { _ = meter.price(event.usage, with: version) }
            } else if case .priced(let priced) = meter.price(event.usage, book: book) {
                repriced[event.seq] = priced
            }
        }
        return repriced
    }
}
