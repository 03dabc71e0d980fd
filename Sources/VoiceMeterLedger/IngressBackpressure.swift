import Synchronization

/// Flow control from the ledger writers back to the sockets, in one place. A usage frame read
/// from a socket counts against its call's writer until metering is done with it (submitted,
/// refused, or answered without the writer); the socket stops being read while that writer has
/// half its queue waiting or on its way — before `submit` must refuse — and every paused socket is
/// read again once a writer's queue is down to a quarter after a commit.
public final class IngressBackpressure: Sendable {
    /// Usage frames read and not yet handled by metering, for one writer.
    private final class InFlight: Sendable {
        let frames = Atomic<Int>(0)
    }

    private let inFlight: [InFlight]
    private let highWatermarkEvents: Int
    private let lowWatermarkEvents: Int
    private let resumePaused: @Sendable () -> Void

    /// - Parameter resumePaused: reads every paused socket again (the listener's); called on a
    ///   writer's thread, so it must return quickly.
    public init(writers: LedgerWriters, resumePaused: @escaping @Sendable () -> Void) {
        inFlight = writers.writers.map { _ in InFlight() }
        highWatermarkEvents = writers.queueEventsMax / 2
        lowWatermarkEvents = writers.queueEventsMax / 4
        self.resumePaused = resumePaused
    }

    /// A usage frame for `writer`'s call was read and is handed to metering. Returns whether its
    /// socket may be read on (`false`: pause it).
    package func frameRead(for writer: LedgerWriter) -> Bool {
        let onTheirWay = inFlight[writer.index].frames.add(1, ordering: .relaxed).newValue
        return writer.queuedEventCount + onTheirWay < highWatermarkEvents
    }

    /// Whether a socket carrying another message for `writer`'s calls may be read on.
    package func hasRoom(for writer: LedgerWriter) -> Bool {
        writer.queuedEventCount + inFlight[writer.index].frames.load(ordering: .relaxed) < highWatermarkEvents
    }

    /// Metering is done with a usage frame of `writer`'s call.
    package func frameHandled(for writer: LedgerWriter) {
        inFlight[writer.index].frames.subtract(1, ordering: .relaxed)
    }

    /// A writer committed a batch: at or below the low watermark, paused sockets are read again
    /// (cheap when none is paused).
    public func committed(_ batch: CommittedBatch) {
        if batch.queuedEventsAfter <= lowWatermarkEvents { resumePaused() }
    }
}
