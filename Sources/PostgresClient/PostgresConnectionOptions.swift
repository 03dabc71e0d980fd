import CLibPQ

/// Where and how to connect: a libpq connection string (a `postgresql://` URI or `key=value` conninfo),
/// plus keyword overrides applied on top of it (for example a different `dbname`).
public struct PostgresConnectionOptions: Sendable, CustomStringConvertible {
    /// The connection string as given; it may contain a password, so it is never printed.
    public var connectionString: String
    /// libpq keywords that replace the connection string's values, applied in order.
    public var overrides: [(keyword: String, value: String)]

    public init(connectionString: String, overrides: [(keyword: String, value: String)] = []) {
        self.connectionString = connectionString
        self.overrides = overrides
    }

    /// The same server with another database.
    public func database(_ name: String) -> PostgresConnectionOptions {
        var copy = self
        copy.overrides.append((keyword: "dbname", value: name))
        return copy
    }

    /// Checks that libpq can parse the connection string, with libpq's reason when it cannot.
    public func validate() throws(PostgresError) {
        var errorMessage: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(connectionString, &errorMessage) else {
            let reason = errorMessage.map { String(cString: $0) } ?? "not a connection string"
            if let errorMessage { PQfreemem(errorMessage) }
            throw PostgresError(
                kind: .invalidArgument,
                message: "DATABASE_URL is not a valid PostgreSQL connection string: \(trimmed(reason))",
                hint: "Use a URI such as postgresql://user@host:5432/dbname or key=value pairs such as 'host=/run/postgresql dbname=voicemeter'."
            )
        }
        PQconninfoFree(options)
    }

    /// The whole target as one `key='value'` conninfo string, overrides applied, for handing to a
    /// child process. It includes any password: never log it (use `description`).
    public var conninfo: String {
        var values: [(String, String)] = []
        var errorMessage: UnsafeMutablePointer<CChar>?
        if let options = PQconninfoParse(connectionString, &errorMessage) {
            var cursor = options
            while let keyword = cursor.pointee.keyword {
                if let value = cursor.pointee.val { values.append((String(cString: keyword), String(cString: value))) }
                cursor += 1
            }
            PQconninfoFree(options)
        } else if let errorMessage {
            PQfreemem(errorMessage)
        }
        for (keyword, value) in overrides {
            values.removeAll { $0.0 == keyword }
            values.append((keyword, value))
        }
        return values.map { keyword, value in
            var quoted = ""
            for character in value {
                if character == "\\" || character == "'" { quoted.append("\\") }
                quoted.append(character)
            }
            return "\(keyword)='\(quoted)'"
        }.joined(separator: " ")
    }

    /// Keywords whose values are secrets (libpq's `password` and the client key's `sslpassword`).
    static func isSecret(_ keyword: String) -> Bool { keyword == "password" || keyword == "sslpassword" }

    /// The connection's target with any password replaced by `***`, for logs and `--print-config`.
    public var description: String {
        var parts: [String] = []
        var errorMessage: UnsafeMutablePointer<CChar>?
        if let options = PQconninfoParse(connectionString, &errorMessage) {
            var cursor = options
            while let keyword = cursor.pointee.keyword {
                if let value = cursor.pointee.val {
                    let key = String(cString: keyword)
                    let shown = Self.isSecret(key) ? "***" : String(cString: value)
                    parts.append("\(key)=\(shown)")
                }
                cursor += 1
            }
            PQconninfoFree(options)
        } else {
            if let errorMessage { PQfreemem(errorMessage) }
            parts.append("<unparsable connection string>")
        }
        for (keyword, value) in overrides {
            parts.append("\(keyword)=\(Self.isSecret(keyword) ? "***" : value)")
        }
        return parts.joined(separator: " ")
    }
}

func trimmed(_ message: String) -> String {
    var text = Substring(message)
    while let last = text.last, last.isWhitespace { text = text.dropLast() }
    return String(text)
}
