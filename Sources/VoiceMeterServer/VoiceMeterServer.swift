// VoiceMeterServer: the composition root. It builds the ledger writers, the metering shards, the
// finance API, the token cache, readiness and the WebSocket listener from a ServerConfiguration
// (the database comes from the caller), wires them, and starts and stops them in order. The
// ingress delegate (token checks, flow control, health endpoints) and the settings live here.

import Dispatch
import Foundation
import Logging
import MeteringCore
import PostgresClient
import Synchronization
import VoiceMeterDomain
import VoiceMeterFinanceAPI
import VoiceMeterLedger
import VoiceMeterMetering
import VoiceMeterStore
import WebSocketTransport

/// The running metering server: the composition of ingress, metering, prices, tokens and the
/// ledger writer. `start` builds it from configuration; tests call the same with port 0.
public final class VoiceMeterServer: Sendable {
    public let configuration: ServerConfiguration
    private let logger: Logger
    private let services: MeteringServices
    private let tokens: TokenCache
    private let readiness: ReadinessMonitor
    private let ingress: WebSocketServer
    private let delegate: IngressDelegate
    private let shards: [MeteringShard]
    private let budgetSettings: TableWatcher
    private let rollups: RollupFolder

    /// Connects to the database, loads prices and tokens, and starts listening.
    public static func start(configuration: ServerConfiguration, migrations: MigrationSet, logger: Logger) throws -> VoiceMeterServer {
        let server = try VoiceMeterServer(configuration: configuration, migrations: migrations, logger: logger)
        server.services.prices.start()
        server.tokens.start()
        server.readiness.start()
        server.services.writers.start()
        try server.ingress.start(delegate: server.delegate)
        server.shards.forEach { $0.startTicking() }
        server.budgetSettings.start()
        server.rollups.start()
        logger.info("listening", metadata: [
            "listen.host": "\(configuration.listener.host)", "listen.port": "\(server.port)",
            "tls": "\(configuration.listener.tlsCertificatePath != nil)", "database": "\(configuration.database)",
        ])
        return server
    }

    private init(configuration given: ServerConfiguration, migrations: MigrationSet, logger: Logger) throws {
        _ = MetricsExport.registry  // metrics handles made before the bootstrap would count nowhere
        // Every session of the server gives up on a database that does not answer.
        var configuration = given
        configuration.database = given.database.limited(by: SessionLimits(connectTimeoutSeconds: given.databaseConnectTimeoutSeconds,
                                                                          statementTimeoutSeconds: given.databaseStatementTimeoutSeconds))
        self.configuration = configuration
        self.logger = logger
        let ingressReference = LateBound<WebSocketServer>()
        let metrics = ServerMetrics()
        tokens = try TokenCache(options: configuration.database, refreshMilliseconds: configuration.tokenRefreshIntervalMilliseconds,
                                logger: logger) { connections in
            metrics.connectionsRevoked.increment(by: connections.count)
            for connection in connections { ingressReference.value.close(connection, code: 1008, reason: "token revoked") }
        }
        readiness = ReadinessMonitor(options: configuration.database, migrations: migrations,
                                     intervalMilliseconds: configuration.readinessCheckIntervalMilliseconds, logger: logger)
        // The writer reports to the shard and the shard sends through the ingress, which is built
        // last: both are bound once everything exists.
        let shardsReference = LateBound<[MeteringShard]>()
        let router = CallRouter(shardCount: configuration.meteringShards)
        let writers = LedgerWriters(
            count: configuration.writerConnections, options: configuration.database, batchEventsMax: configuration.writerBatchEventsMax,
            flushIntervalMilliseconds: configuration.writerFlushIntervalMilliseconds,
            queueEventsMax: configuration.writerQueueEventsMax, logger: logger
        ) { batch in
            // Each shard acknowledges the calls of its users.
            let shards = shardsReference.value
            for (index, part) in batch.split(by: { router.shard(forUser: $0) }, shardCount: shards.count) {
                shards[index].perform { $0.committed(part) }
            }
            if batch.queueBelowLowWatermark { ingressReference.value.resumeAllPaused() }
        } onRefused: { event, reason in
            shardsReference.value[router.shard(forUser: event.userID)].perform { $0.refused(event, reason: reason) }
        }
        let services = MeteringServices(
            prices: try PriceBookWatcher(options: configuration.database, logger: logger), writers: writers,
            registry: CallRegistry(options: configuration.database), router: router, ingress: ingressReference,
            metering: MeteringSettings(defaults: configuration.defaultBudget, defaultCallCostEstimate: configuration.defaultCallCostEstimate,
                                       tickSeconds: configuration.budgetTickSeconds,
                                       abandonAfterSeconds: Int64(configuration.abandonCallAfterSeconds),
                                       callStartPastSeconds: Int64(configuration.callStartPastSeconds),
                                       clockSkewSeconds: Int64(configuration.clockSkewSeconds), callsPerConnectionMax: configuration.callsPerConnectionMax,
                                       unknownCallRecordsPerSecond: configuration.unknownCallRecordsPerSecond,
                                       grantSeconds: configuration.budgetGrantSeconds, grantLeaseSeconds: Int64(configuration.budgetGrantLeaseSeconds)),
            grantHolder: Self.grantHolder(),
            clock: configuration.clock
        )
        self.services = services
        let shards = (0..<configuration.meteringShards).map { MeteringShard(index: $0, environment: services, logger: logger) }
        self.shards = shards
        ingress = WebSocketServer(configuration: configuration.listener)
        delegate = IngressDelegate(tokens: tokens, readiness: readiness, shards: shards, router: router, writers: writers,
                                   finance: FinanceAPI(tokenKind: { [tokens] in tokens.kind(of: $0) }, options: configuration.database,
                                                       now: { [clock = configuration.clock] in clock.now }),
                                   metrics: services.metrics, ingressLimits: configuration.ingress) { [ingress] message, connection in
            ingress.send(message, to: connection)
        }
        shardsReference.bind(shards)
        budgetSettings = TableWatcher(options: configuration.database, channel: "user_budget_settings", logger: logger) { _ in
            for shard in shards { shard.perform { $0.budgetSettingsChanged() } }
        }
        ingressReference.bind(ingress)
        rollups = RollupFolder(options: configuration.database, foldSeconds: configuration.rollupFoldSeconds, logger: logger)
    }

    /// This process as a holder of budget grants (a core appends its number): host, process and
    /// start, so a restarted process never takes over the grants of the one before (they expire).
    private static func grantHolder() -> String {
        "\(ProcessInfo.processInfo.hostName)/\(getpid())/\(Timestamp.now.microsecondsSinceEpoch)"
    }

    /// The port the server listens on.
    public var port: Int { ingress.port }

    /// How long the stop takes at most beyond `shutdownDrainSeconds`: closing connections once
    /// their acks are written, then the final fold of the rollup journal.
    public static let shutdownSecondsAfterDrain = grantReturnSeconds + closeSeconds + finalFoldSeconds
    private static let grantReturnSeconds = 2
    private static let closeSeconds = 2
    private static let finalFoldSeconds = 3

    /// Graceful stop, bounded whatever the database does: stop reading sockets and refuse new
    /// connections, let metering hand everything it received to the writer, commit it (at most
    /// `shutdownDrainSeconds`), return the budget grants (at most 2 s), queue the acknowledgements, close every connection with 1001 once
    /// its acks are written (at most 2 s), then fold the rollup journal (at most 3 s; a journal
    /// left behind is folded by the next server). What was not committed is not acknowledged:
    /// clients resend it.
    public func shutdown() {
        ingress.stopReceiving()
        shards.forEach { $0.stopTicking() }
        shards.forEach { $0.barrier() }
        services.writers.drainAndStop(timeoutSeconds: Double(configuration.shutdownDrainSeconds))
        shards.forEach { $0.barrier() }
        // What the budget grants hold beyond frames still on their way goes back to the users
        // (at most the registry's statement time; an unanswered return expires with its lease).
        shards.forEach { $0.releaseGrants() }
        shards.forEach { $0.barrier() }
        services.registry.barrier(timeoutSeconds: Self.grantReturnSeconds)
        ingress.shutdown(drainSeconds: Double(Self.closeSeconds))
        rollups.stop(within: Self.finalFoldSeconds)
        services.prices.stop()
        budgetSettings.stop()
        tokens.stop()
        readiness.stop()
        logger.info("stopped")
    }
}

/// The services metering uses, and the way back to the clients.
final class MeteringServices: MeteringEnvironment {
    let prices: PriceBookWatcher
    let writers: LedgerWriters
    let registry: CallRegistry
    let router: CallRouter
    private let ingress: LateBound<WebSocketServer>
    let metering: MeteringSettings
    let grantHolder: String

    init(prices: PriceBookWatcher, writers: LedgerWriters, registry: CallRegistry, router: CallRouter,
         ingress: LateBound<WebSocketServer>, metering: MeteringSettings, grantHolder: String, clock: any MeteringClock) {
        self.clock = clock
        self.grantHolder = grantHolder
        self.prices = prices
        self.writers = writers
        self.registry = registry
        self.router = router
        self.ingress = ingress
        self.metering = metering
    }

    let clock: any MeteringClock
    let metrics = ServerMetrics()

    func send(_ message: ServerMessage, to connection: ConnectionID) {
        metrics.sent(message)
        ingress.value.send(message, to: connection)
    }
}

/// A reference bound once, after construction, to break a construction cycle.
final class LateBound<Value: Sendable>: Sendable {
    private let storage = Mutex<Value?>(nil)

    func bind(_ value: Value) { storage.withLock { $0 = value } }

    var value: Value {
        storage.withLock { stored in
            guard let stored else { preconditionFailure("LateBound used before bind") }
            return stored
        }
    }
}
