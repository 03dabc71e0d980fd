/// Bulk price files for `voicemeter pricing import`: CSV with a header row, or a JSON array.
///
/// Columns / members: `service`, `operation`, `model`, `unit`, `price`, `increment`, `minimum`,
/// `percent_fee`, `fixed_fee`, `effective_from`. Numbers in JSON may be numbers or strings; both
/// are read exactly. Errors name the row (CSV line or JSON index) and the field.
public enum PriceFile {
    static let columns = ["service", "operation", "model", "unit", "price", "increment", "minimum", "percent_fee", "fixed_fee", "effective_from"]

    /// Parses a file's text, choosing JSON when it starts with `[`.
    public static func parse(_ text: String, now: Timestamp) throws(PriceInputError) -> [PriceChange] {
        let trimmed = text.drop(while: { $0.isWhitespace })
        return trimmed.first == "[" ? try parseJSON(text, now: now) : try parseCSV(text, now: now)
    }

    public static func parseCSV(_ text: String, now: Timestamp) throws(PriceInputError) -> [PriceChange] {
        let table: CSVReader.Table?
        do throws(CSVReader.TableError) { table = try CSVReader.table(text) } catch { throw PriceInputError("\(error)") }
        guard let table else { throw PriceInputError("the file has no header row; start with: \(columns.joined(separator: ","))") }
        for name in table.columns where !columns.contains(name) {
            throw PriceInputError("line \(table.headerLine): unknown column '\(name)'; columns are \(columns.joined(separator: ", "))")
        }
        var changes: [PriceChange] = []
        for row in table.rows {
            do throws(PriceInputError) {
                changes.append(try PriceInput.change(try fields(row.values.filter { !$0.value.isEmpty }), now: now))
            } catch {
                throw PriceInputError("line \(row.line): \(error.description)")
            }
        }
        return changes
    }

    public static func parseJSON(_ text: String, now: Timestamp) throws(PriceInputError) -> [PriceChange] {
        let document: JSONValue
        do throws(JSONSyntaxError) {
            document = try JSONParser.parse(text)
        } catch {
            throw PriceInputError("the file is not valid JSON: \(error)")
        }
        guard case .array(let entries) = document else { throw PriceInputError("a JSON price file is an array of objects") }
        var changes: [PriceChange] = []
        for (index, entry) in entries.enumerated() {
            guard case .object(let members) = entry else { throw PriceInputError("entry \(index): expected an object, got \(entry.kindDescription)") }
            var values: [String: String] = [:]
            for (key, value) in members {
                guard columns.contains(key) else { throw PriceInputError("entry \(index): unknown field '\(key)'; fields are \(columns.joined(separator: ", "))") }
                switch value {
                case .string(let text), .number(let text): values[key] = text
                case .null: continue
                default: throw PriceInputError("entry \(index): '\(key)' must be a string or a number, got \(value.kindDescription)")
                }
            }
            do throws(PriceInputError) {
                changes.append(try PriceInput.change(try fields(values), now: now))
            } catch {
                throw PriceInputError("entry \(index): \(error.description)")
            }
        }
        return changes
    }

    private static func fields(_ values: [String: String]) throws(PriceInputError) -> PriceInput.Fields {
        for required in ["service", "operation", "unit"] where values[required] == nil {
            throw PriceInputError("'\(required)' is missing")
        }
        return PriceInput.Fields(
            service: values["service"]!, operation: values["operation"]!, model: values["model"], unit: values["unit"]!,
            price: values["price"], increment: values["increment"], minimum: values["minimum"],
            percentFee: values["percent_fee"], fixedFee: values["fixed_fee"], effectiveFrom: values["effective_from"]
        )
    }
}

