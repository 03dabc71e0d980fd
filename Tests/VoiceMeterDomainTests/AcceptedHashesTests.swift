import Testing
import VoiceMeterDomain

@Suite("Accepted payload hashes of a live call")
struct AcceptedHashesTests {
    private func hash(_ byte: UInt8) -> PayloadHash { PayloadHash(bytes: [UInt8](repeating: byte, count: PayloadHash.byteCount))! }

    @Test("frames in order, ahead of order and far out of order are all remembered by seq")
    func remembersEverySeq() {
        var hashes = AcceptedHashes()
        for seq in [1, 2, 5, 3, 4, 6, 1_000_000, 0, -7] as [Int64] { hashes[seq] = hash(UInt8(truncatingIfNeeded: seq)) }
        for seq in [1, 2, 3, 4, 5, 6, 1_000_000, 0, -7] as [Int64] { #expect(hashes[seq] == hash(UInt8(truncatingIfNeeded: seq))) }
        #expect(hashes[7] == nil)
        #expect(hashes[999_999] == nil)
    }

    @Test("a dropped hash is gone until the seq is accepted again, with whatever content it then has")
    func dropAndAcceptAgain() {
        var hashes = AcceptedHashes()
        for seq in 1...3 as ClosedRange<Int64> { hashes[seq] = hash(9) }
        hashes[2] = nil
        #expect(hashes[2] == nil)
        #expect(hashes[1] == hash(9) && hashes[3] == hash(9))
        hashes[2] = hash(4)
        #expect(hashes[2] == hash(4))
        hashes[3] = hash(1)
        #expect(hashes[3] == hash(1))
    }

    @Test("any sequence of accepts and drops reads back like a plain dictionary", arguments: 0..<20)
    func matchesADictionary(round: Int) {
        var random = SeededRandom(seed: UInt64(round))
        var hashes = AcceptedHashes()
        var model: [Int64: PayloadHash] = [:]
        for _ in 0..<400 {
            let seq = Int64(random.next() % 40) - 2
            if random.next() % 4 == 0 {
                hashes[seq] = nil
                model[seq] = nil
            } else {
                let value = hash(UInt8(random.next() % 256))
                hashes[seq] = value
                model[seq] = value
            }
        }
        for seq in -3...40 as ClosedRange<Int64> { #expect(hashes[seq] == model[seq], "seq \(seq)") }
    }
}
