/// A provider-reported cost to compare with the ledger's estimate (seed 002 phase 3).
public struct ReportedCost: Sendable, Hashable {
    /// The file line it came from, for messages.
    public var line: Int
    public var callID: String
    public var service: String
    public var actualCost: ExactDecimal

    public init(line: Int, callID: String, service: String, actualCost: ExactDecimal) {
        self.line = line
        self.callID = callID
        self.service = service
        self.actualCost = actualCost
    }
}

/// Reads provider cost exports for `voicemeter reconcile`.
public enum ReconciliationFile {
    /// Twilio call records: columns `CallSid` (the pipeline's call_id), `Duration` and `Price`
    /// (Twilio writes charges as negative numbers; the magnitude is the cost).
    public static func twilio(_ text: String) throws(PriceInputError) -> [ReportedCost] {
        try parse(text, required: ["CallSid", "Price"]) { values, line throws(PriceInputError) in
            let price = try amount(values["Price"]!, "Price", line)
            return ReportedCost(line: line, callID: values["CallSid"]!, service: "twilio",
                                actualCost: price.isNegative ? ((try? price.negated()) ?? price) : price)
        }
    }

    /// Any provider: columns `call_id`, `service`, `actual_cost`.
    public static func generic(_ text: String) throws(PriceInputError) -> [ReportedCost] {
        try parse(text, required: ["call_id", "service", "actual_cost"]) { values, line throws(PriceInputError) in
            let cost = try amount(values["actual_cost"]!, "actual_cost", line)
            guard !cost.isNegative else { throw PriceInputError("line \(line): actual_cost is negative; write what the provider charged, e.g. 0.07") }
            return ReportedCost(line: line, callID: values["call_id"]!, service: values["service"]!, actualCost: cost)
        }
    }

    private static func parse(_ text: String, required: [String],
                              _ make: ([String: String], Int) throws(PriceInputError) -> ReportedCost) throws(PriceInputError) -> [ReportedCost] {
        let table: CSVReader.Table?
        do throws(CSVReader.TableError) { table = try CSVReader.table(text) } catch { throw PriceInputError("\(error)") }
        guard let table else { throw PriceInputError("the file is empty; it needs a header row with \(required.joined(separator: ", "))") }
        for column in required where !table.columns.contains(column) {
            throw PriceInputError("line \(table.headerLine): no '\(column)' column; the header needs \(required.joined(separator: ", "))")
        }
        var costs: [ReportedCost] = []
        for row in table.rows {
            for column in required where row.values[column]?.isEmpty != false {
                throw PriceInputError("line \(row.line): '\(column)' is empty")
            }
            costs.append(try make(row.values, row.line))
        }
        return costs
    }

    private static func amount(_ text: String, _ column: String, _ line: Int) throws(PriceInputError) -> ExactDecimal {
        guard let value = ExactDecimal(text.trimmingSpaces) else {
            throw PriceInputError("line \(line): \(column) '\(text)' is not a decimal number")
        }
        return value
    }
}
