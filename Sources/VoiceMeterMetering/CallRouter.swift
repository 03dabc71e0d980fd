import Synchronization
import VoiceMeterDomain

/// Which metering shard owns a call. A user's calls all go to one shard (a stable hash of the
/// user id), so the user's budget lives in one place; `call.start` carries the user id, later
/// messages only the call id, so the router remembers the call's shard until it is summarized.
package final class CallRouter: Sendable {
    package let shardCount: Int
    private let shardByCall = Mutex<[String: Int]>([:])

    package init(shardCount: Int) {
        precondition(shardCount >= 1)
        self.shardCount = shardCount
    }

    /// The shard for a user.
    package func shard(forUser userID: String) -> Int {
        stableIndex(of: userID, count: shardCount)
    }

    /// Routes a message: `call.start` pins the call to its user's shard; other messages follow it
    /// (an unknown call goes to shard 0, which answers `unknown_call`).
    package func shard(for message: ClientMessage) -> Int {
        // One shard holds every call: no table is kept (it cost a lock and a lookup per message).
        guard shardCount > 1 else { return 0 }
        if case .callStart(let start) = message {
            let shard = shard(forUser: start.userID)
            // A call id already pinned stays where it is: its shard answers another user's duplicate_call.
            return shardByCall.withLock { table in
                if let existing = table[start.callID] { return existing }
                table[start.callID] = shard
                return shard
            }
        }
        return shard(forCall: message.callID)
    }

    /// The shard of a call already started (shard 0 for an unknown call).
    package func shard(forCall callID: String) -> Int {
        guard shardCount > 1 else { return 0 }
        return shardByCall.withLock { $0[callID] } ?? 0
    }

    /// Pins a call to the shard that created its live state (a `call.start` racing the end of an
    /// earlier call of the same id must not lose its route).
    package func pin(_ callID: String, to shard: Int) {
        guard shardCount > 1 else { return }
        shardByCall.withLock { $0[callID] = shard }
    }

    package func forget(_ callID: String) {
        guard shardCount > 1 else { return }
        _ = shardByCall.withLock { $0.removeValue(forKey: callID) }
    }
}
