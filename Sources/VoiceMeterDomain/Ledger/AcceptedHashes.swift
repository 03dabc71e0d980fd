/// The payload hashes of a live call's accepted frames by seq: what tells a harmless resend from
/// a `seq_conflict` for as long as the call runs.
///
/// Frames nearly always arrive as seq 1, 2, 3…: those hashes sit back to back in one buffer (the
/// hash's bytes only), instead of one dictionary entry and one array per frame (~100 bytes each,
/// most of a busy server's memory). A seq out of that run goes to a small dictionary until the
/// gap before it fills.
public struct AcceptedHashes: Sendable {
    /// Hashes of seqs 1…`runLength`, `hashBytes` each, in seq order.
    private var run: [UInt8] = []
    private var runLength: Int64 = 0
    /// Seqs inside the run whose hash was dropped (a conflict found at commit, a refused frame).
    private var dropped: Set<Int64> = []
    /// Seqs outside the run.
    private var others: [Int64: [UInt8]] = [:]
    /// Bytes of each hash (SHA-256).
    public static let hashBytes = 32

    public init() {}

    /// The hash accepted for `seq`, if any; setting `nil` drops it.
    public subscript(seq: Int64) -> [UInt8]? {
        get {
            if seq >= 1 && seq <= runLength && (dropped.isEmpty || !dropped.contains(seq)) {
                let start = Int(seq - 1) * Self.hashBytes
                return Array(run[start..<start + Self.hashBytes])
            }
            return others.isEmpty ? nil : others[seq]
        }
        set {
            if seq >= 1 && seq <= runLength {
                if let newValue, newValue.count == Self.hashBytes {
                    let start = Int(seq - 1) * Self.hashBytes
                    run.replaceSubrange(start..<start + Self.hashBytes, with: newValue)
                    dropped.remove(seq)
                    others[seq] = nil
                } else {
                    dropped.insert(seq)
                    others[seq] = newValue
                }
            } else if seq == runLength + 1, let newValue, newValue.count == Self.hashBytes {
                extendRun(with: newValue)
                // Frames that arrived ahead of this one join the run now.
                while !others.isEmpty, let next = others[runLength + 1], next.count == Self.hashBytes {
                    others[runLength + 1] = nil
                    extendRun(with: next)
                }
            } else {
                others[seq] = newValue
            }
        }
    }

    private mutating func extendRun(with hash: [UInt8]) {
        run.append(contentsOf: hash)
        runLength += 1
    }
}
