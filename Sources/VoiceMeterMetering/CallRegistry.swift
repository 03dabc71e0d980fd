import Dispatch
import PostgresClient
import VoiceMeterDomain
import VoiceMeterStore

/// Database work of metering that is not the ledger — registering calls with their user's budget,
/// refreshing committed spend, recording alerts, marking calls — on a queue and connection of its
/// own, so the metering shards never block; the connection reconnects by itself after an outage.
package final class CallRegistry: Sendable {
    private let queue = DispatchQueue(label: "voicemeter.calls")
    private let connection: ConnectionSlot

    package init(options: PostgresConnectionOptions) {
        connection = ConnectionSlot(options: options)
    }

    /// Registers (or finds) the call and reads its user's budget as of `instant`.
    package func register(_ start: CallStart, startedAt: Timestamp, at instant: Timestamp,
                  completion: @escaping @Sendable (Result<(CallRegistration, UserBudgetSnapshot), any Error>) -> Void) {
        run(completion) { connection in
            (try CallStore(connection: connection).register(start, startedAt: startedAt),
             try BudgetStore(connection: connection).snapshot(of: start.userID, at: instant))
        }
    }

    /// Committed day and month spend of these users, and their current settings.
    package func refresh(_ userIDs: [String], at instant: Timestamp,
                 completion: @escaping @Sendable (Result<[String: UserBudgetSnapshot], any Error>) -> Void) {
        run(completion) { try BudgetStore(connection: $0).snapshots(of: userIDs, at: instant) }
    }

    /// Sets what `holder` holds of a user's budget (requests run in the order they are made).
    package func takeGrant(_ request: GrantRequest, holder: String, completion: @escaping @Sendable (Result<GrantAnswer, any Error>) -> Void) {
        run(completion) { try BudgetStore(connection: $0).takeGrant(request, holder: holder) }
    }

    /// Extends the leases of `holder`'s grants of the renewal's users (in order with the requests).
    package func renewGrants(_ renewal: GrantRenewal, holder: String, completion: @escaping @Sendable (Result<Set<String>, any Error>) -> Void) {
        run(completion) { try BudgetStore(connection: $0).renewGrants(renewal, holder: holder) }
    }

    /// Waits until everything asked before has run, or `timeoutSeconds` passed.
    package func barrier(timeoutSeconds: Int) {
        let done = DispatchSemaphore(value: 0)
        queue.async { done.signal() }
        _ = done.wait(timeout: .now() + .seconds(timeoutSeconds))
    }

    /// Writes an alert (best effort: metering goes on if the database is away).
    package func record(_ alert: CostAlert) {
        run({ _ in }) { try BudgetStore(connection: $0).record(alert) }
    }

    package func evaluateQuotas(at instant: Timestamp) {
        run({ _ in }) { try BudgetStore(connection: $0).evaluateQuotas(at: instant) }
    }

    package func recordRejected(callID: String, seq: Int64?, reason: String, payloadJSON: String) {
        run({ _ in }) { try BudgetStore(connection: $0).recordRejected(callID: callID, seq: seq, reason: reason, payloadJSON: payloadJSON) }
    }

    package func markCall(userID: String, callID: String, status: String, cutoffReason: String?, onlyIfGeneration: Int64?) {
        run({ _ in }) {
            try BudgetStore(connection: $0).markCall(userID: userID, callID: callID, status: status, cutoffReason: cutoffReason,
                                                     onlyIfGeneration: onlyIfGeneration)
        }
    }

    private func run<T: Sendable>(_ completion: @escaping @Sendable (Result<T, any Error>) -> Void,
                                  _ body: @escaping @Sendable (PostgresConnection) throws -> T) {
        queue.async { [connection] in completion(Result { try connection.use(body) }) }
    }
}
