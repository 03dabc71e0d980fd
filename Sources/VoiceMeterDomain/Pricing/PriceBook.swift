/// Every known price version, indexed for lookup by usage and time.
///
/// Lookup order for usage of `(service, operation, model, unit)` at `ts`: the model's own price
/// in each compatible unit (`UsageUnit.priceUnits`), then the service/operation default (model
/// `""`) likewise; within a key, the version whose `[effectiveFrom, effectiveTo)` contains `ts`.
public struct PriceBook: Sendable {
    private struct OperationKey: Hashable {
        var service: String
        var operation: String
    }

    /// service/operation → model → unit → versions sorted by `effectiveFrom`.
    private var index: [OperationKey: [String: [UsageUnit: [PriceVersion]]]] = [:]
    private var byID: [Int64: PriceVersion] = [:]
    /// Every version, ordered by key then start.
    public let versions: [PriceVersion]

    public init(_ versions: [PriceVersion]) {
        self.versions = versions.sorted { ($0.key.description, $0.effectiveFrom) < ($1.key.description, $1.effectiveFrom) }
        for version in self.versions {
            let operation = OperationKey(service: version.key.service, operation: version.key.operation)
            index[operation, default: [:]][version.key.model, default: [:]][version.key.unit, default: []].append(version)
            byID[version.id] = version
        }
    }

    /// Whether `other` is this very book (the same built table, not an equal one): a holder
    /// replaces its copy only when the book changed, instead of retaining its tables on every use.
    public func isIdentical(to other: PriceBook) -> Bool {
        versions.withUnsafeBufferPointer { mine in other.versions.withUnsafeBufferPointer { $0.baseAddress == mine.baseAddress } }
            && versions.count == other.versions.count
    }

    /// The version with this `service_pricing.id`.
    public func version(id: Int64) -> PriceVersion? { byID[id] }

    public static let empty = PriceBook([])

    /// The version that prices this usage at `instant`, or `nil` when none is in force.
    public func price(service: String, operation: String, model: String?, unit: UsageUnit, at instant: Timestamp) -> PriceVersion? {
        guard let models = index[OperationKey(service: service, operation: operation)] else { return nil }
        if let model, !model.isEmpty, let units = models[model],
           let version = Self.version(in: units, for: unit, at: instant) {
            return version
        }
        guard let defaults = models[""] else { return nil }
        return Self.version(in: defaults, for: unit, at: instant)
    }

    /// The versions of every key in force at `instant`.
    public func inForce(at instant: Timestamp) -> [PriceVersion] {
        versions.filter { $0.isInForce(at: instant) }
    }

    private static func version(in units: [UsageUnit: [PriceVersion]], for unit: UsageUnit, at instant: Timestamp) -> PriceVersion? {
        for priceUnit in unit.priceUnits {
            if let versions = units[priceUnit], let version = version(in: versions, at: instant) { return version }
        }
        return nil
    }

    private static func version(in sorted: [PriceVersion], at instant: Timestamp) -> PriceVersion? {
        // Versions of one key never overlap: only the last one starting at or before `instant` can apply.
        var low = 0
        var high = sorted.count
        while low < high {
            let middle = (low + high) / 2
            if sorted[middle].effectiveFrom <= instant { low = middle + 1 } else { high = middle }
        }
        guard low > 0 else { return nil }
        let candidate = sorted[low - 1]
        return candidate.isInForce(at: instant) ? candidate : nil
    }
}
