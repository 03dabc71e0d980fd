import Foundation
import Logging
import VoiceMeterDomain
import VoiceMeterStore

/// Writes one JSON object per log line to standard error: `ts`, `level`, `label`, `message`,
/// `source` and the metadata (`call.id`, `user.id`, `conn.id`, …) as string members, for log
/// shippers that index fields.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        // write(2), ignoring failures: FileHandle.write traps on EPIPE or a full disk, and a log
        // line is never worth the server.
        let bytes = Array((line(for: event, at: Timestamp.now) + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }

    /// One event as one JSON object (no newline).
    func line(for event: LogEvent, at instant: Timestamp) -> String {
        var members: [(key: String, value: JSONValue)] = [
            ("ts", .string(instant.description)), ("level", .string(event.level.rawValue)), ("label", .string(label)),
            ("message", .string(event.message.description)), ("source", .string(event.source)),
        ]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }).sorted(by: { $0.key < $1.key }) {
            members.append((key, .string(value.description)))
        }
        return JSONValue.object(members).serialized
    }
}
