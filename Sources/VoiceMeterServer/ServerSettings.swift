import Foundation
import PostgresClient
import VoiceMeterDomain

/// `voicemeter serve`'s settings from, in order of precedence, command-line flags, the
/// environment (`VOICEMETER_*`, `DATABASE_URL`), a configuration file and the defaults.
///
/// The file is `key = value` lines with the flags' names as keys (`writer-connections = 2`);
/// `#` starts a comment, values may be quoted. Every value is checked before the server starts,
/// and a bad one is reported with the setting's name and where it came from.
public struct ServerSettings: Sendable {
    /// One setting, declared once: its key (the flag without dashes), environment variable,
    /// default, meaning and the form its value must have. The CLI's flags and help,
    /// `--print-config`, the file's keys and every check of a value come from these declarations.
    public struct Setting: Sendable {
        public var key: String
        public var environment: String
        /// `nil`: unset unless given.
        public var defaultValue: String?
        public var help: String
        public var kind: Kind
        /// Printed as `***` by `--print-config`.
        public var isSecret = false

        /// The form of a value.
        public enum Kind: Sendable {
            /// A whole number within the bounds.
            case integer(ClosedRange<Int>)
            /// An amount in USD, zero or more (or unset).
            case money
            /// `host:port`.
            case address
            /// A readable file (or unset).
            case file
            case choice([String])
            /// Any text, checked where it is used (a database URL, a list of origins).
            case text
        }
    }

    /// Where a value came from.
    public enum Source: String, Sendable {
        case flag, environment, file, `default`
    }

    /// A value that cannot be used, named so the operator can fix it.
    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    /// The built-in defaults, read from the types that own them.
    private static let builtIn = ServerConfiguration(database: PostgresConnectionOptions(connectionString: ""))

    public static let all: [Setting] = [
        Setting(key: "database-url", environment: "DATABASE_URL", defaultValue: nil,
                help: "PostgreSQL URI or conninfo; unset: the embedded cluster", kind: .text, isSecret: true),
        Setting(key: "listen", environment: "VOICEMETER_LISTEN", defaultValue: "\(builtIn.listener.host):\(builtIn.listener.port)", help: "host:port to bind exactly; port 0 picks one", kind: .address),
        Setting(key: "tls-cert", environment: "VOICEMETER_TLS_CERT", defaultValue: nil, help: "PEM certificate chain: serve wss:// (with tls-key)", kind: .file),
        Setting(key: "tls-key", environment: "VOICEMETER_TLS_KEY", defaultValue: nil, help: "PEM private key for tls-cert", kind: .file),
        Setting(key: "allowed-origin", environment: "VOICEMETER_ALLOWED_ORIGIN", defaultValue: nil, help: "comma-separated Origins allowed to upgrade; unset: any", kind: .text),
        Setting(key: "writer-connections", environment: "VOICEMETER_WRITER_CONNECTIONS", defaultValue: String(builtIn.writerConnections), help: "ledger writers, each with its own database connection", kind: .integer(1...64)),
        Setting(key: "batch-events", environment: "VOICEMETER_BATCH_EVENTS", defaultValue: String(builtIn.writerBatchEventsMax), help: "commit when this many events wait", kind: .integer(1...100_000)),
        Setting(key: "flush-ms", environment: "VOICEMETER_FLUSH_MS", defaultValue: String(builtIn.writerFlushIntervalMilliseconds), help: "commit when the oldest waiting event is this old", kind: .integer(1...60_000)),
        Setting(key: "queue-events", environment: "VOICEMETER_QUEUE_EVENTS", defaultValue: String(builtIn.writerQueueEventsMax), help: "events a writer queues before answering overloaded", kind: .integer(100...10_000_000)),
        Setting(key: "metering-shards", environment: "VOICEMETER_METERING_SHARDS", defaultValue: String(builtIn.meteringShards), help: "metering actors, each on its own queue; a user's calls share one (default: half the cores)", kind: .integer(1...256)),
        Setting(key: "budget-tick-seconds", environment: "VOICEMETER_BUDGET_TICK_SECONDS", defaultValue: String(builtIn.budgetTickSeconds), help: "how often committed spend is refreshed and cutoffs re-sent", kind: .integer(1...3_600)),
        Setting(key: "budget-grant-seconds", environment: "VOICEMETER_BUDGET_GRANT_SECONDS", defaultValue: String(builtIn.budgetGrantSeconds), help: "seconds of a user's burn one budget grant covers (topped up when half is left)", kind: .integer(1...300)),
        Setting(key: "budget-grant-lease-seconds", environment: "VOICEMETER_BUDGET_GRANT_LEASE_SECONDS", defaultValue: String(builtIn.budgetGrantLeaseSeconds), help: "a node that dies holds its budget grants this long (at least twice budget-tick-seconds)", kind: .integer(2...3_600)),
        Setting(key: "rollup-fold-seconds", environment: "VOICEMETER_ROLLUP_FOLD_SECONDS", defaultValue: String(builtIn.rollupFoldSeconds), help: "how often each user's journaled period deltas are folded into cost_summaries (a sweep over the users, a step a second)", kind: .integer(1...3_600)),
        Setting(key: "abandon-after-seconds", environment: "VOICEMETER_ABANDON_AFTER_SECONDS", defaultValue: String(builtIn.abandonCallAfterSeconds), help: "a silent call is closed as abandoned after this long", kind: .integer(10...86_400)),
        Setting(key: "database-connect-timeout-seconds", environment: "VOICEMETER_DATABASE_CONNECT_TIMEOUT_SECONDS", defaultValue: String(builtIn.databaseConnectTimeoutSeconds), help: "give up connecting to the database after this long", kind: .integer(1...300)),
        Setting(key: "database-statement-timeout-seconds", environment: "VOICEMETER_DATABASE_STATEMENT_TIMEOUT_SECONDS", defaultValue: String(builtIn.databaseStatementTimeoutSeconds), help: "a statement may run this long (locks wait a third of it)", kind: .integer(3...3_600)),
        Setting(key: "calls-per-connection-max", environment: "VOICEMETER_CALLS_PER_CONNECTION_MAX", defaultValue: String(builtIn.callsPerConnectionMax), help: "live calls one connection may carry; another call.start on it is answered call.rejected connection_call_limit", kind: .integer(1...1_000_000)),
        Setting(key: "unknown-call-records-per-second", environment: "VOICEMETER_UNKNOWN_CALL_RECORDS_PER_SECOND", defaultValue: String(builtIn.unknownCallRecordsPerSecond), help: "frames for unknown calls one connection may have recorded in rejected_frames per second; beyond, they are answered and counted only", kind: .integer(0...100_000)),
        Setting(key: "shutdown-drain-seconds", environment: "VOICEMETER_SHUTDOWN_DRAIN_SECONDS", defaultValue: String(builtIn.shutdownDrainSeconds), help: "on SIGTERM, wait this long for the writers to commit what was received (the whole stop takes at most \(VoiceMeterServer.shutdownSecondsAfterDrain) s more; what was not committed stays unacknowledged)", kind: .integer(1...600)),
        Setting(key: "call-start-past-seconds", environment: "VOICEMETER_CALL_START_PAST_SECONDS", defaultValue: String(builtIn.callStartPastSeconds), help: "a new call's call.start ts may lie this far before the server's clock", kind: .integer(0...86_400)),
        Setting(key: "clock-skew-seconds", environment: "VOICEMETER_CLOCK_SKEW_SECONDS", defaultValue: String(builtIn.clockSkewSeconds), help: "a ts may lie this far after the server's clock (a frame's this far before its call's start)", kind: .integer(0...3_600)),
        Setting(key: "default-call-limit", environment: "VOICEMETER_DEFAULT_CALL_LIMIT", defaultValue: builtIn.defaultBudget.callLimit?.description, help: "USD per call for users without budget settings", kind: .money),
        Setting(key: "default-day-limit", environment: "VOICEMETER_DEFAULT_DAY_LIMIT", defaultValue: builtIn.defaultBudget.dayLimit?.description, help: "USD per UTC day for users without settings; unset: none", kind: .money),
        Setting(key: "default-month-limit", environment: "VOICEMETER_DEFAULT_MONTH_LIMIT", defaultValue: builtIn.defaultBudget.monthLimit?.description, help: "USD per UTC month for users without settings", kind: .money),
        Setting(key: "idle-timeout-seconds", environment: "VOICEMETER_IDLE_TIMEOUT_SECONDS", defaultValue: String(builtIn.listener.limits.idleTimeoutSeconds), help: "ping a silent connection after this long; drop it after as long again", kind: .integer(1...3_600)),
        Setting(key: "connections-max", environment: "VOICEMETER_CONNECTIONS_MAX", defaultValue: String(builtIn.listener.limits.connectionsMax), help: "open connections in all", kind: .integer(1...1_000_000)),
        Setting(key: "connections-per-peer-max", environment: "VOICEMETER_CONNECTIONS_PER_PEER_MAX", defaultValue: String(builtIn.listener.limits.connectionsPerPeerMax), help: "open connections from one address", kind: .integer(1...1_000_000)),
        Setting(key: "messages-per-second", environment: "VOICEMETER_MESSAGES_PER_SECOND", defaultValue: String(builtIn.ingress.messagesPerSecondPerConnection), help: "sustained client messages per connection (burst: twice)", kind: .integer(1...1_000_000)),
        Setting(key: "log-format", environment: "VOICEMETER_LOG_FORMAT", defaultValue: "text", help: "text or json (one object per line)", kind: .choice(["text", "json"])),
        Setting(key: "log-level", environment: "VOICEMETER_LOG_LEVEL", defaultValue: "info", help: "trace, debug, info, notice, warning, error or critical", kind: .choice(["trace", "debug", "info", "notice", "warning", "error", "critical"])),
    ]

    /// Every setting's value (`nil`: unset) and where it came from, in `all`'s order.
    public private(set) var values: [(setting: Setting, value: String?, source: Source)]

    /// Resolves every setting; `flags` are keyed by setting key, `file` is the configuration
    /// file's path and text when one is used.
    public init(flags: [String: String], environment: [String: String], file: (path: String, text: String)?) throws(Invalid) {
        let fromFile = try file.map { file throws(Invalid) in try Self.parse(file.text, path: file.path) } ?? [:]
        values = Self.all.map { setting in
            if let value = flags[setting.key] { return (setting, value, .flag) }
            if let value = environment[setting.environment], !value.isEmpty { return (setting, value, .environment) }
            if let value = fromFile[setting.key] { return (setting, value, .file) }
            return (setting, setting.defaultValue, .default)
        }
    }

    public subscript(key: String) -> String? { values.first { $0.setting.key == key }?.value }

    /// `key = value` lines; unknown keys are refused (a typo must not silently keep a default).
    static func parse(_ text: String, path: String) throws(Invalid) -> [String: String] {
        var result: [String: String] = [:]
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = Self.withoutComment(rawLine).trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty else { continue }
            let parts = trimmed.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[0].isEmpty else {
                throw Invalid(description: "\(path):\(index + 1): expected key = value, e.g. writer-connections = 2")
            }
            guard all.contains(where: { $0.key == parts[0] }) else {
                throw Invalid(description: "\(path):\(index + 1): unknown setting '\(parts[0])'; known: \(all.map(\.key).joined(separator: ", "))")
            }
            var value = parts[1]
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            result[parts[0]] = value
        }
        return result
    }

    /// The line up to a `#` that is outside double quotes (a quoted password may contain `#`).
    static func withoutComment(_ line: Substring) -> String {
        var inQuotes = false
        for index in line.indices {
            switch line[index] {
            case "\"": inQuotes.toggle()
            case "#" where !inQuotes: return String(line[..<index])
            default: break
            }
        }
        return String(line)
    }

    /// The effective settings, one per line, secrets redacted, each with its source.
    public var printed: String {
        let width = Self.all.map(\.key.count).max() ?? 0
        return values.map { setting, value, source in
            let shown = value.map { setting.isSecret ? PostgresConnectionOptions(connectionString: $0).description : $0 } ?? "(unset)"
            return setting.key.padding(toLength: width, withPad: " ", startingAt: 0) + " = " + shown + "   # \(source.rawValue): \(setting.help)"
        }.joined(separator: "\n")
    }

    // MARK: Typed values

    private func invalid(_ key: String, _ expected: String) -> Invalid {
        let entry = values.first { $0.setting.key == key }!
        let origin = switch entry.source {
        case .flag: "--\(key)"
        case .environment: entry.setting.environment
        case .file: "\(key) in the configuration file"
        case .default: "the default of \(key)"
        }
        return Invalid(description: "\(origin) = '\(entry.value ?? "")' is not valid: \(expected)")
    }

    /// The value as a whole number within its declared bounds.
    public func integer(_ key: String) throws(Invalid) -> Int {
        guard case .integer(let range) = Self.declaration(key).kind else { preconditionFailure("\(key) is not declared an integer") }
        guard let text = self[key], let value = Int(text), range.contains(value) else {
            throw invalid(key, "expected a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    public func money(_ key: String) throws(Invalid) -> ExactDecimal? {
        guard let text = self[key] else { return nil }
        guard let value = ExactDecimal(text), !value.isNegative else { throw invalid(key, "expected an amount in USD such as 10 or 2.50") }
        return value
    }

    /// The value, one of its declared choices.
    public func choice(_ key: String) throws(Invalid) -> String {
        guard case .choice(let choices) = Self.declaration(key).kind else { preconditionFailure("\(key) is not declared a choice") }
        guard let value = self[key], choices.contains(value) else { throw invalid(key, "expected one of \(choices.joined(separator: ", "))") }
        return value
    }

    static func declaration(_ key: String) -> Setting {
        guard let setting = all.first(where: { $0.key == key }) else { preconditionFailure("no setting \(key) is declared") }
        return setting
    }

    /// Checks every value against its declaration; a bad one is named with where it came from.
    public func validate() throws(Invalid) {
        for setting in Self.all {
            switch setting.kind {
            case .integer: _ = try integer(setting.key)
            case .money: _ = try money(setting.key)
            case .address: _ = try address(setting.key)
            case .file: _ = try readableFile(setting.key)
            case .choice: _ = try choice(setting.key)
            case .text: break
            }
        }
    }

    /// The settings given on the command line (`--key value` or `--key=value`), by key.
    public static func flags(from arguments: [String]) throws(Invalid) -> [String: String] {
        var flags: [String: String] = [:]
        var index = arguments.startIndex
        while index < arguments.endIndex {
            let argument = arguments[index]
            guard argument.hasPrefix("--") else {
                throw Invalid(description: "unexpected argument '\(argument)'; settings are given as --key value")
            }
            let name = argument.dropFirst(2)
            let key: String
            let value: String
            if let equals = name.firstIndex(of: "=") {
                key = String(name[..<equals])
                value = String(name[name.index(after: equals)...])
            } else {
                key = String(name)
                index += 1
                guard index < arguments.endIndex else { throw Invalid(description: "--\(key) needs a value") }
                value = arguments[index]
            }
            guard all.contains(where: { $0.key == key }) else {
                throw Invalid(description: "unknown option '--\(key)'; the settings are \(all.map { "--\($0.key)" }.joined(separator: ", "))")
            }
            flags[key] = value
            index += 1
        }
        return flags
    }

    /// `host:port`, with IPv6 literals in brackets (`[::1]:8787`).
    public func address(_ key: String) throws(Invalid) -> (host: String, port: Int) {
        guard let text = self[key], let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65_535).contains(port) else {
            throw invalid(key, "expected host:port, e.g. 127.0.0.1:8787, 0.0.0.0:8787 or [::1]:8787")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw invalid(key, "the host is missing; write 0.0.0.0:\(port) for every interface") }
        return (host, port)
    }

    /// A readable file, or `nil` when unset.
    public func readableFile(_ key: String) throws(Invalid) -> String? {
        guard let path = self[key] else { return nil }
        guard FileManager.default.isReadableFile(atPath: path) else { throw invalid(key, "cannot read the file; check the path and permissions") }
        return path
    }

    /// Applies the server settings to `configuration` (the database is chosen by the caller).
    public func apply(to configuration: inout ServerConfiguration) throws(Invalid) {
        try validate()
        let address = try address("listen")
        configuration.listener.host = address.host
        configuration.listener.port = address.port
        let certificate = try readableFile("tls-cert")
        let key = try readableFile("tls-key")
        guard (certificate == nil) == (key == nil) else {
            throw Invalid(description: "tls-cert and tls-key go together: give both for wss://, or neither for ws://")
        }
        configuration.listener.tlsCertificatePath = certificate
        configuration.listener.tlsPrivateKeyPath = key
        configuration.listener.allowedOrigins = self["allowed-origin"].map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        configuration.writerConnections = try integer("writer-connections")
        configuration.writerBatchEventsMax = try integer("batch-events")
        configuration.writerFlushIntervalMilliseconds = try integer("flush-ms")
        configuration.writerQueueEventsMax = try integer("queue-events")
        configuration.meteringShards = try integer("metering-shards")
        configuration.budgetTickSeconds = try integer("budget-tick-seconds")
        configuration.budgetGrantSeconds = try integer("budget-grant-seconds")
        configuration.budgetGrantLeaseSeconds = try integer("budget-grant-lease-seconds")
        guard configuration.budgetGrantLeaseSeconds >= 2 * configuration.budgetTickSeconds else {
            throw Invalid(description: "budget-grant-lease-seconds (\(configuration.budgetGrantLeaseSeconds)) must be at least twice budget-tick-seconds (\(configuration.budgetTickSeconds)): the tick renews the leases")
        }
        configuration.rollupFoldSeconds = try integer("rollup-fold-seconds")
        configuration.abandonCallAfterSeconds = try integer("abandon-after-seconds")
        configuration.databaseConnectTimeoutSeconds = try integer("database-connect-timeout-seconds")
        configuration.databaseStatementTimeoutSeconds = try integer("database-statement-timeout-seconds")
        configuration.shutdownDrainSeconds = try integer("shutdown-drain-seconds")
        configuration.callsPerConnectionMax = try integer("calls-per-connection-max")
        configuration.unknownCallRecordsPerSecond = try integer("unknown-call-records-per-second")
        configuration.callStartPastSeconds = try integer("call-start-past-seconds")
        configuration.clockSkewSeconds = try integer("clock-skew-seconds")
        configuration.defaultBudget = BudgetPolicy(callLimit: try money("default-call-limit"), dayLimit: try money("default-day-limit"),
                                                   monthLimit: try money("default-month-limit"))
        configuration.listener.limits.idleTimeoutSeconds = try integer("idle-timeout-seconds")
        configuration.listener.limits.connectionsMax = try integer("connections-max")
        configuration.listener.limits.connectionsPerPeerMax = try integer("connections-per-peer-max")
        let rate = try integer("messages-per-second")
        configuration.allowMessages(perSecond: rate, burst: rate * 2)
    }
}
