import Logging
import VoiceMeterDomain
import VoiceMeterLedger
import WebSocketTransport

/// The metering shards as one: a message, a commit or a refusal goes to the shard of its call or
/// user (`CallRouter`); what concerns every shard (a closed connection, changed settings, the
/// tick, the stop) goes to all. Nothing here waits except `barrier`.
package final class MeteringShards: Sendable {
    private let shards: [MeteringShard]
    private let router: CallRouter

    /// One shard per `environment.router.shardCount`, each on its own queue.
    package init(environment: any MeteringEnvironment, logger: Logger) {
        router = environment.router
        shards = (0..<router.shardCount).map { MeteringShard(index: $0, environment: environment, logger: logger) }
    }

    /// A client message, to the shard of its call (`call.start`: of its user), with the ledger
    /// writer the ingress chose for the call.
    package func handle(_ message: ClientMessage, from connection: ConnectionID, writer: LedgerWriter) {
        shards[router.shard(for: message)].perform { $0.handle(message, from: connection, writer: writer) }
    }

    /// A frame the protocol refused for now (`rate_limited`): its call must not be acknowledged past it.
    package func refusedTransiently(callID: String, seq: Int64, from connection: ConnectionID) {
        shards[router.shard(forCall: callID)].perform { $0.refusedTransiently(callID: callID, seq: seq, from: connection) }
    }

    /// A usage frame the decoder refused for good: its call's shard answers and settles it.
    package func refusedAtDecoding(_ error: ProtocolError, callID: String, from connection: ConnectionID) {
        shards[router.shard(forCall: callID)].perform { $0.refusedAtDecoding(error, from: connection) }
    }

    package func connectionClosed(_ connection: ConnectionID) {
        for shard in shards { shard.perform { $0.connectionClosed(connection) } }
    }

    /// A ledger writer's commit: each shard acknowledges the calls of its users.
    package func committed(_ batch: CommittedBatch) {
        for (index, part) in batch.split(by: { router.shard(forUser: $0) }, shardCount: shards.count) {
            shards[index].perform { $0.committed(part) }
        }
    }

    /// An event the database refused outright, to its user's shard.
    package func refused(_ event: UsageEvent, reason: String) {
        shards[router.shard(forUser: event.userID)].perform { $0.refused(event, reason: reason) }
    }

    package func budgetSettingsChanged() {
        for shard in shards { shard.perform { $0.budgetSettingsChanged() } }
    }

    package func startTicking() { shards.forEach { $0.startTicking() } }
    package func stopTicking() { shards.forEach { $0.stopTicking() } }

    /// Gives back what every shard's budget grants hold beyond frames still on their way.
    package func releaseGrants() { shards.forEach { $0.releaseGrants() } }

    /// Returns once every shard has run everything handed to it before this call.
    package func barrier() { shards.forEach { $0.barrier() } }
}
