import PostgresClient
import VoiceMeterDomain

/// Reads and changes versioned prices in `service_pricing`.
public struct PriceStore {
    private let connection: PostgresConnection

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    /// Every version of every price.
    public func load() throws -> PriceBook {
        let rows = try connection.query("""
            SELECT id, service, operation, model, unit, pricing_type, unit_price, percent_fee, fixed_fee,
                   billing_increment, minimum_billable, effective_from, effective_to
            FROM service_pricing
            """)
        return PriceBook(try rows.map(Self.version(from:)))
    }

    /// Opens a new version of a price from `change.effectiveFrom`, closing the version that was open
    /// then, atomically. Refused when it would rewrite the past: a time inside a closed version, or at
    /// or before the start of the open one.
    @discardableResult
    public func set(_ change: PriceChange, source: String = "manual") throws -> PriceVersion {
        try connection.transaction { connection in try Self.set(change, source: source, on: connection) }
    }

    /// Applies every change in one transaction: all of them or none.
    @discardableResult
    public func importChanges(_ changes: [PriceChange]) throws -> [PriceVersion] {
        try connection.transaction { connection in
            try changes.map { try Self.set($0, source: "import", on: connection) }
        }
    }

    private static func set(_ change: PriceChange, source: String, on connection: PostgresConnection) throws -> PriceVersion {
        let key = change.key
        let keyParameters: [any PostgresEncodable] = [key.service, key.operation, key.model, key.unit.rawValue]
        // Lock the key's versions so two writers cannot both close the same one.
        let existing = try connection.query("""
            SELECT id, effective_from, effective_to FROM service_pricing
            WHERE service = $1 AND operation = $2 AND model = $3 AND unit = $4
            ORDER BY effective_from FOR UPDATE
            """, keyParameters)
        for row in existing {
            let from: Timestamp = try row.decode("effective_from")
            let to: Timestamp? = try row.decodeIfPresent("effective_to")
            if let to {
                guard to <= change.effectiveFrom else {
                    throw PriceInputError(
                        "\(key) already has a version for [\(from), \(to)); past prices are not rewritten: choose --effective-from at or after \(to)"
                    )
                }
            } else if change.effectiveFrom <= from {
                throw PriceInputError(
                    "\(key) has a version in force from \(from); a new version must start after it: choose --effective-from later than \(from)"
                )
            }
        }
        try connection.query("""
            UPDATE service_pricing SET effective_to = $5
            WHERE service = $1 AND operation = $2 AND model = $3 AND unit = $4 AND effective_to IS NULL
            """, keyParameters + [change.effectiveFrom])

        let (pricingType, unitPrice, percent, fixed): (String, ExactDecimal, ExactDecimal, ExactDecimal) = switch change.rule {
        case .perUnit(let price): ("per_unit", price, .zero, .zero)
        case .percentPlusFixed(let percent, let fixed): ("percent_plus_fixed", .zero, percent, fixed)
        }
        let row = try connection.query("""
            INSERT INTO service_pricing (service, operation, model, unit, pricing_type, unit_price, percent_fee, fixed_fee,
                                         billing_increment, minimum_billable, effective_from, source)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
            RETURNING id, service, operation, model, unit, pricing_type, unit_price, percent_fee, fixed_fee,
                      billing_increment, minimum_billable, effective_from, effective_to
            """, keyParameters + [pricingType, unitPrice, percent, fixed, change.billingIncrement, change.minimumBillable, change.effectiveFrom, source])
            .single()
        return try version(from: row)
    }

    static func version(from row: PostgresRow) throws -> PriceVersion {
        let unitName: String = try row.decode("unit")
        guard let unit = UsageUnit(rawValue: unitName) else {
            throw PostgresError(kind: .unexpectedResult, message: "service_pricing has unknown unit '\(unitName)'")
        }
        let rule: PricingRule = try row.decode("pricing_type", as: String.self) == "percent_plus_fixed"
            ? .percentPlusFixed(percent: try row.decode("percent_fee"), fixed: try row.decode("fixed_fee"))
            : .perUnit(unitPrice: try row.decode("unit_price"))
        return PriceVersion(
            id: try row.decode("id"),
            key: PriceKey(service: try row.decode("service"), operation: try row.decode("operation"), model: try row.decode("model"), unit: unit),
            rule: rule,
            billingIncrement: try row.decodeIfPresent("billing_increment"),
            minimumBillable: try row.decodeIfPresent("minimum_billable"),
            effectiveFrom: try row.decode("effective_from"),
            effectiveTo: try row.decodeIfPresent("effective_to")
        )
    }
}
