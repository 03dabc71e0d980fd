import Logging
import PostgresClient
import VoiceMeterClient
import VoiceMeterServer
import VoiceMeterDomain
import VoiceMeterStore

/// A metering server started in this process on a free loopback port, with an ingest token of its
/// own: what `voicemeter-sim` and `voicemeter demo` run against when no server is given.
public final class LocalDeployment {
    public let server: VoiceMeterServer
    public let endpoint: VoiceMeterEndpoint
    private let database: PostgresConnection
    private let tokenName: String

    /// - Parameters:
    ///   - database: a migrated database.
    ///   - connections: client connections the server must take from loopback.
    public init(database options: PostgresConnectionOptions, runID: String, connections: Int, logger: Logger) async throws {
        database = try PostgresConnection(options)
        tokenName = "sim-\(runID)"
        let token = try TokenStore(connection: database).create(name: tokenName, kind: .ingest)
        server = try await VoiceMeterServer.start(configuration: .loopback(database: options, connections: connections),
                                                  migrations: try MigrationSet.bundled(), logger: logger)
        endpoint = VoiceMeterEndpoint(host: "127.0.0.1", port: server.port, bearerToken: token)
    }

    /// Stops the server gracefully and revokes the run's token.
    public func stop() async {
        await server.shutdown()
        try? TokenStore(connection: database).revoke(name: tokenName)
    }
}

extension Scenario {
    /// Gives the run's users the budgets the scenario needs (through `user_budget_settings`, as
    /// an operator would with `voicemeter budgets set`).
    public func prepareUsers(_ userIDs: [String], database: PostgresConnection) throws {
        let settings: BudgetSettings
        switch self {
        case .budgetCutoff: settings = BudgetSettings(callLimit: Self.cutoffCallLimit)
        case .monthExhausted: settings = BudgetSettings(monthLimit: Self.exhaustedMonthLimit)
        case .monthLimit: settings = BudgetSettings(monthLimit: Self.sharedMonthLimit)
        case .normal, .reconnect, .duplicates, .badInput: return
        }
        let budgets = BudgetStore(connection: database)
        for user in userIDs { try budgets.update(user, with: settings) }
    }
}
