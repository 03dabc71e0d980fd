/// The payload hashes of a live call's accepted frames by seq: what tells a harmless resend from
/// a `seq_conflict` for as long as the call runs.
///
/// Frames nearly always arrive as seq 1, 2, 3…: those hashes sit back to back in one buffer (the
/// hash's bytes only), instead of one dictionary entry and one array per frame (~100 bytes each,
/// most of a busy server's memory). A seq out of that run goes to a small dictionary until the
/// gap before it fills.
public struct AcceptedHashes: Sendable {
    /// Hashes of seqs 1…`run.count`, in seq order.
    private var run: [PayloadHash] = []
    /// Seqs inside the run whose hash was dropped (a conflict found at commit, a refused frame).
    private var dropped: Set<Int64> = []
    /// Seqs outside the run.
    private var others: [Int64: PayloadHash] = [:]

    public init() {}

    /// The hash accepted for `seq`, if any; setting `nil` drops it.
    public subscript(seq: Int64) -> PayloadHash? {
        get {
            if seq >= 1 && seq <= run.count && (dropped.isEmpty || !dropped.contains(seq)) { return run[Int(seq - 1)] }
            return others.isEmpty ? nil : others[seq]
        }
        set {
            if seq >= 1 && seq <= run.count {
                if let newValue {
                    run[Int(seq - 1)] = newValue
                    dropped.remove(seq)
                } else {
                    dropped.insert(seq)
                }
            } else if seq == run.count + 1, let newValue {
                run.append(newValue)
                // Frames that arrived ahead of this one join the run now.
                while !others.isEmpty, let next = others.removeValue(forKey: Int64(run.count) + 1) { run.append(next) }
            } else {
                others[seq] = newValue
            }
        }
    }
}
