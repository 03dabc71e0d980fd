// VoiceMeterServer: the composition root. It builds every part from a ServerConfiguration (the
// database comes from the caller) in the order data flows — the listener, tokens, the ledger
// writers and their backpressure, metering, the ingress, the watchers — and runs them as one
// ServiceGroup. Process concerns live here too: settings, readiness, HTTP routes, JSON logs.

import Foundation
import Logging
import PostgresClient
import ServiceLifecycle
import Synchronization
import VoiceMeterDomain
import VoiceMeterFinanceAPI
import VoiceMeterIngress
import VoiceMeterLedger
import VoiceMeterMetering
import VoiceMeterStore
import WebSocketTransport

/// The metering server: `start` builds it (prices and tokens loaded), runs its parts in the
/// background and returns once it listens; `shutdown` stops it, `stopped` waits for a stop that
/// SIGTERM or SIGINT began.
public final class VoiceMeterServer: Sendable {
    public let configuration: ServerConfiguration
    private let logger: Logger
    private let listener: WebSocketServer
    private let group: ServiceGroup
    private let lifecycle = LifecycleExecutor()
    /// Yields once the listener listens; finished when the run ends.
    private let listening = AsyncStream<Void>.makeStream()
    /// The run `start` started.
    private let background = Mutex<Task<Void, any Error>?>(nil)

    /// Builds every part: connects to the database, loads prices and tokens. Nothing runs yet.
    /// - Parameter stopsOnSignals: SIGTERM and SIGINT stop the server gracefully (the command line;
    ///   not in tests).
    private init(configuration given: ServerConfiguration, migrations: MigrationSet, logger: Logger, stopsOnSignals: Bool) throws {
        _ = MetricsExport.registry  // metrics handles made before the bootstrap would count nowhere
        // Every session of the server gives up on a database that does not answer.
        let configuration = {
            var configuration = given
            configuration.database = given.database.limited(by: SessionLimits(connectTimeoutSeconds: given.databaseConnectTimeoutSeconds,
                                                                              statementTimeoutSeconds: given.databaseStatementTimeoutSeconds))
            return configuration
        }()
        self.configuration = configuration
        self.logger = logger
        let database = configuration.database
        let metrics = ServerMetrics()

        // The way out to clients first: everything below may send before the listener listens.
        let listener = WebSocketServer(configuration: configuration.listener)
        self.listener = listener
        let tokens = try TokenCache(options: database, refreshMilliseconds: configuration.tokenRefreshIntervalMilliseconds, logger: logger) { revoked in
            metrics.connectionsRevoked.increment(by: revoked.count)
            for connection in revoked { listener.close(connection, code: 1008, reason: "token revoked") }
        }
        let readiness = ReadinessMonitor(options: database, migrations: migrations,
                                         intervalMilliseconds: configuration.readinessCheckIntervalMilliseconds, logger: logger)

        // The ledger: writers queue from now on and commit once started; their queues pause sockets.
        let writers = LedgerWriters(count: configuration.writerConnections, options: database, batchEventsMax: configuration.writerBatchEventsMax,
                                    flushIntervalMilliseconds: configuration.writerFlushIntervalMilliseconds,
                                    queueEventsMax: configuration.writerQueueEventsMax, logger: logger)
        let backpressure = IngressBackpressure(writers: writers, resumePaused: listener.resumeAllPaused)

        // Metering: the shards decide (MeteringCore), with prices, the registry and the writers.
        let registry = CallRegistry(options: database)
        let prices = try PriceBookWatcher(options: database, logger: logger)
        let metering = MeteringShards(
            environment: MeteringServices(prices: prices, writers: writers, backpressure: backpressure, registry: registry,
                                          router: CallRouter(shardCount: configuration.meteringShards), settings: configuration.meteringSettings,
                                          grantHolder: Self.grantHolder(), clock: configuration.clock, metrics: metrics, clients: listener),
            logger: logger)

        // The ingress feeds metering from the listener; HTTP goes to the routes.
        let routes = HTTPRoutes(readiness: readiness, writers: writers,
                                finance: FinanceAPI(tokenKind: { tokens.kind(of: $0) }, options: database, now: { [clock = configuration.clock] in clock.now }))
        let ingress = Ingress(tokens: tokens, metering: metering, writers: writers, backpressure: backpressure, metrics: metrics,
                              limits: configuration.ingress, clients: listener, http: routes.respond)
        let budgetSettings = TableWatcher(options: database, channel: "user_budget_settings", logger: logger) { _ in metering.budgetSettingsChanged() }
        let rollups = RollupFolder(options: database, foldSeconds: configuration.rollupFoldSeconds, logger: logger)

        // The parts start in this order (prices and tokens are already loaded; a writer queues
        // before its thread runs) and stop one at a time from the last to the first: stop reading,
        // hand what was read to the writers, commit it, return the budget grants, close
        // connections once their acknowledgements are written, fold the rollup journal, then the
        // watchers. What was not committed is not acknowledged: clients resend it. A part that
        // fails to start (the port in use) stops the others the same way.
        let listening = self.listening.continuation
        let parts = [
            ServerPart("readiness", start: readiness.start, stop: readiness.stop),
            ServerPart("tokens", start: tokens.start, stop: tokens.stop),
            ServerPart("prices", start: prices.start, stop: prices.stop),
            ServerPart("budget settings", start: budgetSettings.start, stop: budgetSettings.stop),
            ServerPart("rollups", start: rollups.start) { rollups.stop(within: Self.finalFoldSeconds) },
            ServerPart("connections", start: {}) { listener.shutdown(drainSeconds: Double(Self.closeSeconds)) },
            ServerPart("budget grants", start: {}) {
                // What the grants hold beyond frames still on their way goes back to the users (an
                // unanswered return expires with its lease).
                metering.releaseGrants()
                metering.barrier()
                registry.barrier(timeoutSeconds: Self.grantReturnSeconds)
            },
            ServerPart("ledger writers", start: {
                writers.start(reporting: LedgerReports(committed: { batch in
                    metering.committed(batch)
                    backpressure.committed(batch)
                }, refused: metering.refused))
            }) {
                writers.drainAndStop(timeoutSeconds: Double(configuration.shutdownDrainSeconds))
                metering.barrier()  // the last commits are acknowledged
            },
            ServerPart("metering tick", start: metering.startTicking) {
                metering.stopTicking()
                metering.barrier()  // everything read is with the writers
            },
            ServerPart("listener", start: {
                try listener.start(delegate: ingress)
                logger.info("listening", metadata: [
                    "listen.host": "\(configuration.listener.host)", "listen.port": "\(listener.port)",
                    "tls": "\(configuration.listener.tlsCertificatePath != nil)", "database": "\(configuration.database)",
                ])
                listening.yield()
            }) {
                logger.info("stopping: no new frames are read; what was received is committed and acknowledged")
                listener.stopReceiving()
            },
        ]
        group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: parts.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0, failureTerminationBehavior: .gracefullyShutdownGroup) },
            gracefulShutdownSignals: stopsOnSignals ? [.sigterm, .sigint] : [], logger: logger))
    }

    /// The port the server listens on.
    public var port: Int { listener.port }

    /// Builds the server and runs it in the background; returns once it listens, or throws what
    /// kept it from listening.
    public static func start(configuration: ServerConfiguration, migrations: MigrationSet, logger: Logger,
                             stopsOnSignals: Bool = false) async throws -> VoiceMeterServer {
        let server = try VoiceMeterServer(configuration: configuration, migrations: migrations, logger: logger, stopsOnSignals: stopsOnSignals)
        // Every part runs until a graceful shutdown (SIGTERM or SIGINT when asked, or `shutdown`),
        // on the server's own lifecycle thread; the run rethrows what stopped it otherwise.
        let run = Task(executorPreference: server.lifecycle) {
            defer { server.listening.continuation.finish() }
            try await server.group.run()
            server.logger.info("stopped")
        }
        server.background.withLock { $0 = run }
        // The wait ends when the listener listens, the run ends, or this caller is cancelled.
        for await _ in server.listening.stream where !Task.isCancelled { return server }
        // Not handed out: stopped (a no-op when the run already ended), and its error rethrown.
        await server.shutdown()
        try await run.value
        throw CancellationError()
    }

    /// Stops a server `start` started, gracefully (`init`'s parts in reverse), and returns when it
    /// has stopped: at most `shutdownDrainSeconds` plus `shutdownSecondsAfterDrain`.
    public func shutdown() async {
        await group.triggerGracefulShutdown()
        try? await background.withLock({ $0 })?.value
    }

    /// Runs `body`, then stops the server `start` started, whether `body` returned or threw.
    public func serving<T>(_ body: () async throws -> T) async throws -> T {
        do {
            let result = try await body()
            await shutdown()
            return result
        } catch {
            await shutdown()
            throw error
        }
    }

    /// Returns when a server `start` started has stopped (after SIGTERM or SIGINT, with `stopsOnSignals`).
    public func stopped() async throws {
        try await background.withLock({ $0 })?.value
    }

    /// How long the stop takes at most beyond `shutdownDrainSeconds`: returning the grants,
    /// closing connections once their acks are written, then the final fold of the rollup journal.
    public static let shutdownSecondsAfterDrain = grantReturnSeconds + closeSeconds + finalFoldSeconds
    private static let grantReturnSeconds = 2
    private static let closeSeconds = 2
    private static let finalFoldSeconds = 3

    /// This process as a holder of budget grants (a core appends its number): host, process and
    /// start, so a restarted process never takes over the grants of the one before (they expire).
    private static func grantHolder() -> String {
        "\(ProcessInfo.processInfo.hostName)/\(getpid())/\(Timestamp.now.microsecondsSinceEpoch)"
    }
}
