/// Decodes one complete client message (protocol v1) into a typed value, or the protocol error
/// that says exactly what is wrong. Unknown fields are ignored; an unknown `type` is an error.
public enum ClientMessageDecoder {
    /// Usage amounts carry at most this many decimal places (`api_call_events.usage_amount`).
    public static let amountScaleMaximum = 9
    /// The largest usage amount one frame may report.
    public static let amountMaximum = ExactDecimal(1_000_000_000_000)
    /// Revenue carries at most this many decimal places and stays below `revenueLimit`
    /// (`calls.revenue` is numeric(14, 4)): stored exactly as given, so the summary's margin and
    /// the finance views agree.
    public static let revenueScaleMaximum = 4
    public static let revenueLimit = ExactDecimal(10_000_000_000)
    /// Timestamps must fall in [1970-01-01, 10000-01-01): earlier or later ones are mistakes, and
    /// PostgreSQL cannot store every instant a 64-bit count of microseconds can express.
    public static let earliestTimestamp = Timestamp(microsecondsSinceEpoch: 0)
    public static let latestTimestamp = Timestamp(rfc3339: "9999-12-31T23:59:59.999999Z")!
    /// The largest `metadata` object, as compact JSON.
    public static let metadataBytesMaximum = 8 * 1024

    public static func decode(_ bytes: [UInt8]) -> Result<ClientMessage, ProtocolError> {
        var fields = Fields()
        do throws(JSONSyntaxError) {
            // The members are read straight into their fields: no tree of the message is built.
            if let document = try JSONParser.parseObject(bytes, selecting: Field.named, { fields[$0] = $1 }) {
                return .failure(ProtocolError(.invalidJSON, "a message is one JSON object, got \(document.kindDescription)"))
            }
        } catch {
            return .failure(ProtocolError(.invalidJSON, "the message is not valid JSON: \(error)"))
        }
        do throws(ProtocolError) {
            guard let type = try fields.optionalString(.type, maximumLength: 40) else {
                throw ProtocolError(.missingField, "'type' is missing; use call.start, usage or call.end")
            }
            fields.callID = try fields.string(.callID, maximumLength: 100)
            switch type {
            case "call.start": return .success(.callStart(try decodeStart(&fields)))
            case "usage": return .success(.usage(try decodeUsage(&fields)))
            case "call.end": return .success(.callEnd(CallEnd(callID: fields.callID!, endedAt: try fields.optionalTimestamp(.ts))))
            default:
                throw ProtocolError(.unknownType, "unknown type '\(type)'; use call.start, usage or call.end", callID: fields.callID)
            }
        } catch {
            var error = error
            if error.callID == nil { error.callID = fields.callID }
            if error.seq == nil { error.seq = fields.seq }
            return .failure(error)
        }
    }

    private static func decodeStart(_ fields: inout Fields) throws(ProtocolError) -> CallStart {
        let revenue = try fields.optionalDecimal(.revenue, code: .invalidAmount)
        if let revenue {
            guard !revenue.isNegative else { throw ProtocolError(.invalidAmount, "'revenue' must be zero or more") }
            guard revenue.normalized.scale <= revenueScaleMaximum else {
                throw ProtocolError(.invalidAmount, "'revenue' has more than \(revenueScaleMaximum) decimal places; round it to what the caller paid")
            }
            guard revenue < revenueLimit else { throw ProtocolError(.invalidAmount, "'revenue' must be below 10^10") }
        }
        let currency = try fields.optionalString(.currency, maximumLength: 3) ?? "USD"
        guard currency.utf8.count == 3, currency.utf8.allSatisfy({ $0 >= 0x41 && $0 <= 0x5A }) else {
            throw ProtocolError(.invalidField, "'currency' must be a three-letter ISO 4217 code such as USD")
        }
        return CallStart(
            callID: fields.callID!,
            userID: try fields.string(.userID, maximumLength: 255),
            personaID: try fields.optionalString(.personaID, maximumLength: 50),
            startedAt: try fields.optionalTimestamp(.ts),
            revenue: revenue,
            currency: currency,
            paymentMethod: try fields.optionalString(.paymentMethod, maximumLength: 50) ?? "card"
        )
    }

    private static func decodeUsage(_ fields: inout Fields) throws(ProtocolError) -> UsageFrame {
        fields.seq = try fields.seqNumber()
        guard let occurredAt = try fields.optionalTimestamp(.ts) else {
            throw ProtocolError(.missingField, "'ts' is missing: usage needs the time it happened (RFC 3339 or Unix seconds)")
        }
        guard let amount = try fields.optionalDecimal(.amount, code: .invalidAmount) else {
            throw ProtocolError(.missingField, "'amount' is missing: the usage since the previous frame, e.g. \"30\"")
        }
        guard !amount.isNegative else { throw ProtocolError(.invalidAmount, "amount must be a non-negative decimal") }
        guard amount.normalized.scale <= amountScaleMaximum else {
            throw ProtocolError(.invalidAmount, "amount has more than \(amountScaleMaximum) decimal places")
        }
        guard amount <= amountMaximum else { throw ProtocolError(.invalidAmount, "amount is above 10^12 for one frame; amounts are deltas, not totals") }
        let unitName = try fields.string(.unit, maximumLength: 40)
        guard let unit = UsageUnit(rawValue: unitName) else {
            throw ProtocolError(.invalidUnit, "unknown unit '\(unitName)'; use one of: \(UsageUnit.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let usage = MeteredUsage(
            service: try fields.string(.service, maximumLength: 50),
            operation: try fields.string(.operation, maximumLength: 100),
            model: try fields.optionalString(.model, maximumLength: 100),
            unit: unit, amount: amount, occurredAt: occurredAt
        )
        return UsageFrame(
            callID: fields.callID!, seq: fields.seq!, usage: usage,
            externalID: try fields.optionalString(.externalID, maximumLength: 200),
            metadataJSON: try fields.optionalObjectJSON(.metadata)
        )
    }
}

/// The members of a client message the decoder reads; any other member is ignored.
private enum Field: Int, CaseIterable {
    case type, callID, seq, ts, service, operation, amount, unit, model, externalID, metadata
    case userID, personaID, revenue, currency, paymentMethod

    /// The member's name on the wire.
    var name: String {
        switch self {
        case .type: "type"
        case .callID: "call_id"
        case .seq: "seq"
        case .ts: "ts"
        case .service: "service"
        case .operation: "operation"
        case .amount: "amount"
        case .unit: "unit"
        case .model: "model"
        case .externalID: "external_id"
        case .metadata: "metadata"
        case .userID: "user_id"
        case .personaID: "persona_id"
        case .revenue: "revenue"
        case .currency: "currency"
        case .paymentMethod: "payment_method"
        }
    }

    private static let names = allCases.map { Array($0.name.utf8) }

    /// The field a member name (UTF-8) stands for.
    static func named(_ name: UnsafeBufferPointer<UInt8>) -> Field? {
        names.withUnsafeBufferPointer { names in
            for index in names.indices where names[index].count == name.count {
                let matches = names[index].withUnsafeBufferPointer { candidate in
                    (0..<name.count).allSatisfy { candidate[$0] == name[$0] }
                }
                if matches { return Field(rawValue: index) }
            }
            return nil
        }
    }
}

/// Typed access to a message's members, with errors that name the field and the expected form.
private struct Fields {
    /// Each field's value, by `Field.rawValue`; for a repeated member the last one wins.
    private var values = [JSONValue?](repeating: nil, count: Field.allCases.count)
    var callID: String?
    var seq: Int64?

    subscript(field: Field) -> JSONValue? {
        get { values[field.rawValue] }
        set { values[field.rawValue] = newValue }
    }

    func string(_ field: Field, maximumLength: Int) throws(ProtocolError) -> String {
        guard let value = try optionalString(field, maximumLength: maximumLength) else {
            throw ProtocolError(.missingField, "'\(field.name)' is missing")
        }
        return value
    }

    func optionalString(_ field: Field, maximumLength: Int) throws(ProtocolError) -> String? {
        guard let value = self[field] else { return nil }
        switch value {
        case .null: return nil
        case .string(let text):
            guard !text.isEmpty else { throw ProtocolError(.invalidField, "'\(field.name)' must not be empty") }
            // One pass over the UTF-8 bytes: a character starts at every byte that is not a
            // continuation byte (10xxxxxx); the control characters are all single bytes.
            var characters = 0
            var hasControl = false
            var text = text
            text.withUTF8 { bytes in
                for byte in bytes {
                    if byte & 0xC0 != 0x80 { characters += 1 }
                    if byte < 0x20 || byte == 0x7F { hasControl = true }
                }
            }
            guard characters <= maximumLength else {
                throw ProtocolError(.invalidField, "'\(field.name)' is longer than \(maximumLength) characters")
            }
            guard !hasControl else {
                throw ProtocolError(.invalidField, "'\(field.name)' contains control characters")
            }
            return text
        default:
            throw ProtocolError(.invalidField, "'\(field.name)' must be a string, got \(value.kindDescription)")
        }
    }

    /// An exact decimal from a JSON number or a decimal string.
    func optionalDecimal(_ field: Field, code: ProtocolErrorCode) throws(ProtocolError) -> ExactDecimal? {
        guard let value = self[field] else { return nil }
        switch value {
        case .null: return nil
        case .number(let text), .string(let text):
            guard let decimal = ExactDecimal(text) else {
                throw ProtocolError(code, "'\(field.name)' must be a decimal number or decimal string such as \"0.0059\", got '\(text.prefix(40))'")
            }
            return decimal
        default:
            throw ProtocolError(code, "'\(field.name)' must be a decimal number or decimal string, got \(value.kindDescription)")
        }
    }

    /// RFC 3339 text, or Unix seconds as a JSON number, between 1970 and 9999.
    func optionalTimestamp(_ field: Field) throws(ProtocolError) -> Timestamp? {
        guard let instant = try anyTimestamp(field) else { return nil }
        guard instant >= ClientMessageDecoder.earliestTimestamp, instant <= ClientMessageDecoder.latestTimestamp else {
            throw ProtocolError(.invalidTimestamp, "'\(field.name)' must be between 1970-01-01 and 9999-12-31")
        }
        return instant
    }

    private func anyTimestamp(_ field: Field) throws(ProtocolError) -> Timestamp? {
        guard let value = self[field] else { return nil }
        switch value {
        case .null: return nil
        case .string(let text):
            guard let instant = Timestamp(rfc3339: text) else {
                throw ProtocolError(.invalidTimestamp, "'\(field.name)' must be RFC 3339 like 2026-11-22T18:00:30Z or Unix seconds, got '\(text.prefix(40))'")
            }
            return instant
        case .number(let text):
            guard let seconds = ExactDecimal(text), let instant = Timestamp(unixSeconds: seconds) else {
                throw ProtocolError(.invalidTimestamp, "'\(field.name)' as a number must be Unix seconds such as 1795374032.134")
            }
            return instant
        default:
            throw ProtocolError(.invalidTimestamp, "'\(field.name)' must be an RFC 3339 string or Unix seconds, got \(value.kindDescription)")
        }
    }

    func seqNumber() throws(ProtocolError) -> Int64 {
        guard let value = self[.seq], value != .null else {
            throw ProtocolError(.missingField, "'seq' is missing: an integer >= 1, unique within the call")
        }
        guard case .number(let text) = value, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let seq = Int64(text), seq >= 1 else {
            throw ProtocolError(.invalidField, "'seq' must be an integer >= 1")
        }
        return seq
    }

    func optionalObjectJSON(_ field: Field) throws(ProtocolError) -> String? {
        guard let value = self[field] else { return nil }
        switch value {
        case .null: return nil
        case .object:
            // PostgreSQL's jsonb refuses NUL characters and numbers with huge exponents; refuse them
            // here so one frame can never fail the batch it is written in.
            let text = value.serialized
            guard text.utf8.count <= ClientMessageDecoder.metadataBytesMaximum else {
                throw ProtocolError(.invalidField, "'\(field.name)' is larger than \(ClientMessageDecoder.metadataBytesMaximum) bytes")
            }
            guard !text.contains("\\u0000"), Self.numbersAreStorable(value) else {
                throw ProtocolError(.invalidField, "'\(field.name)' contains a NUL character or a number with an exponent beyond 3 digits")
            }
            return text
        default: throw ProtocolError(.invalidField, "'\(field.name)' must be a JSON object, got \(value.kindDescription)")
        }
    }

    private static func numbersAreStorable(_ value: JSONValue) -> Bool {
        switch value {
        case .number(let text):
            guard let marker = text.firstIndex(where: { $0 == "e" || $0 == "E" }) else { return true }
            return text[text.index(after: marker)...].filter(\.isNumber).count <= 3
        case .array(let values): return values.allSatisfy(numbersAreStorable)
        case .object(let members): return members.allSatisfy { numbersAreStorable($0.value) }
        case .null, .bool, .string: return true
        }
    }
}
