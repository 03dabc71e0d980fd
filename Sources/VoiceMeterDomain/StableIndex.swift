/// `key`'s place among `count` (FNV-1a of its UTF-8): the same in every process, unlike `hashValue`.
public func stableIndex(of key: String, count: Int) -> Int {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in key.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    return Int(hash % UInt64(count))
}
