import Foundation
import MeteringCore
import PostgresClient
import VoiceMeterDomain
import VoiceMeterMetering
import WebSocketTransport

/// Everything `voicemeter serve` can be told, with its defaults.
public struct ServerConfiguration: Sendable {
    /// Where the database is.
    public var database: PostgresConnectionOptions
    /// The listener: address, port (0 = any free port), TLS, path, subprotocol and its limits
    /// (sizes, pieces, connections, timeouts).
    public var listener = WebSocketServerConfiguration()
    /// What one connection may send: messages a second (set with `allowMessages`), refusals in a row.
    public private(set) var ingress = IngressLimits()
    /// Ledger writers, each with its own connection; a call always uses the same one. Two use both
    /// cores of a small machine (PLATFORM: ~60,000 vs ~36,000 rows/s for one).
    public var writerConnections = 2
    /// A ledger writer commits when this many events are waiting…
    public var writerBatchEventsMax = 2_000
    /// …or when the oldest waiting event is this old. Under load a writer commits whatever
    /// queued during its last commit at once; this bounds the wait when it is idle (10,000 live
    /// calls: ack p99 ~170 ms at 25 ms against ~300–400 ms at 100 ms, for ~12 % more database CPU).
    public var writerFlushIntervalMilliseconds = 25
    /// Events waiting for one writer before new usage is refused with `overloaded` (memory bound);
    /// sockets stop being read at half of it.
    public var writerQueueEventsMax = 200_000
    /// How often readiness (database reachable, migrations current) is re-checked.
    public var readinessCheckIntervalMilliseconds = 1_000
    /// How often bearer tokens are reloaded even without a NOTIFY (revocation safety net).
    public var tokenRefreshIntervalMilliseconds = 5_000
    /// Budget limits for users without a `user_budget_settings` row (seed 002 section 6.1: $10 per
    /// call, $100 per month; no daily limit unless set).
    public var defaultBudget = BudgetPolicy.seedDefaults
    /// Expected cost of a call at admission for a user without history (seed 002: $0.90).
    public var defaultCallCostEstimate = ExactDecimal("0.90")!
    /// How often committed spend is refreshed, settings reloaded and cutoffs re-sent.
    public var budgetTickSeconds = 30
    /// Seconds of a user's burn one budget grant covers; a core tops it up when half is left.
    public var budgetGrantSeconds = 5
    /// How long a budget grant outlives its core's last renewal: a node that dies (SIGKILL, power)
    /// holds its grants this long before the other nodes may spend them. At least twice the tick,
    /// which renews them.
    public var budgetGrantLeaseSeconds = 60
    /// How often, at the longest, each user's period deltas journaled by the ledger are folded
    /// into `cost_summaries`, by a sweep over the users a step a second (a small journal is folded
    /// whole every second; readers count unfolded deltas either way).
    public var rollupFoldSeconds = 5
    /// A call with no message for this long is closed as abandoned and summarized.
    public var abandonCallAfterSeconds = 600
    /// How long connecting to the database may take before the attempt is abandoned.
    public var databaseConnectTimeoutSeconds = 5
    /// How long one statement of the server's may run; locks wait a third of it, an idle
    /// transaction lives twice it (`SessionLimits`).
    public var databaseStatementTimeoutSeconds = 30
    /// How far before the server's clock a new call's `call.start` `ts` may lie.
    public var callStartPastSeconds = 900
    /// How far a client's `ts` may run ahead of the server's clock (and a frame's before its call's start).
    public var clockSkewSeconds = 60
    /// Live calls one connection may carry (`MeteringSettings.liveCallsPerConnectionMax`).
    public var callsPerConnectionMax = 1_000
    /// Frames for unknown calls one connection may have recorded in `rejected_frames` per second.
    public var unknownCallRecordsPerSecond = 10
    /// Metering's wall clock and tick timer; tests inject a fake one.
    public var clock: any MeteringClock = SystemMeteringClock()
    /// Metering shards (actors on their own queues); a user's calls always share one. Half the
    /// cores: the service thread, the ledger writers and, on a small machine, PostgreSQL need the
    /// rest. One shard meters well over 100,000 frames/s; on 2 cores, two shards cost ~15 % more
    /// server CPU per frame in thread wake-ups (BENCHMARKS.md, item 12).
    public var meteringShards = max(1, ProcessInfo.processInfo.activeProcessorCount / 2)
    /// How long shutdown waits for the writers to commit in-flight work before closing
    /// connections anyway (what was not committed stays unacknowledged, for clients to resend).
    public var shutdownDrainSeconds = 10

    public init(database: PostgresConnectionOptions) {
        self.database = database
    }
}

extension ServerConfiguration {
    /// Message pieces (WebSocket fragments, partial reads) a connection may send for each message
    /// it may send, when a message arrives in more than one.
    public static let messagePiecesPerMessage = 16

    /// Lets each connection send `perSecond` messages a second sustained after a burst of `burst`,
    /// and as many message pieces as those messages may need (`messagePiecesPerMessage` each).
    public mutating func allowMessages(perSecond: Int, burst: Int) {
        ingress.messagesPerSecondPerConnection = perSecond
        ingress.messagesBurstPerConnection = burst
        listener.limits.messagePiecesPerSecondPerConnection = perSecond * Self.messagePiecesPerMessage
        listener.limits.messagePiecesBurstPerConnection = burst * Self.messagePiecesPerMessage
    }

    /// What metering decides with, from these settings.
    var meteringSettings: MeteringSettings {
        MeteringSettings(defaults: defaultBudget, defaultCallCostEstimate: defaultCallCostEstimate, tickSeconds: budgetTickSeconds,
                         abandonAfterSeconds: Int64(abandonCallAfterSeconds), callStartPastSeconds: Int64(callStartPastSeconds),
                         clockSkewSeconds: Int64(clockSkewSeconds), callsPerConnectionMax: callsPerConnectionMax,
                         unknownCallRecordsPerSecond: unknownCallRecordsPerSecond,
                         grantSeconds: budgetGrantSeconds, grantLeaseSeconds: Int64(budgetGrantLeaseSeconds))
    }

    /// A server for local runs (simulator, demo, benchmarks): loopback only, any free port, and
    /// room for `connections` client connections from loopback.
    public static func loopback(database: PostgresConnectionOptions, connections: Int) -> ServerConfiguration {
        var configuration = ServerConfiguration(database: database)
        configuration.listener.host = "127.0.0.1"
        configuration.listener.port = 0
        configuration.listener.limits.connectionsPerPeerMax = max(configuration.listener.limits.connectionsPerPeerMax, connections + 64)
        return configuration
    }
}
