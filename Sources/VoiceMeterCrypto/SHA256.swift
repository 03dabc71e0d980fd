import COpenSSL
import VoiceMeterDomain

/// SHA-256 digests through OpenSSL's EVP interface.
public enum SHA256 {
    /// The algorithm, fetched from OpenSSL's default provider once: `EVP_sha256()` makes
    /// `EVP_Digest` look the implementation up again on every call (a third of a frame's hashing).
    private static let algorithm = FetchedDigest(name: "SHA2-256")

    /// The 32-byte digest of `bytes`.
    public static func digest(_ bytes: some Collection<UInt8>) -> [UInt8] {
        bytes.withContiguousStorageIfAvailable(digest(buffer:)) ?? Array(bytes).withUnsafeBufferPointer(digest(buffer:))
    }

    private static func digest(buffer: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: 32) { output, initialized in
            digest(buffer, into: UnsafeMutableRawBufferPointer(output))
            initialized = 32
        }
    }

    /// Writes the 32-byte digest of `buffer` into `output` (at least 32 bytes).
    static func digest(_ buffer: UnsafeBufferPointer<UInt8>, into output: UnsafeMutableRawBufferPointer) {
        precondition(output.count >= 32)
        var length: UInt32 = 0
        let status = EVP_Digest(buffer.baseAddress, buffer.count, output.baseAddress, &length, algorithm.handle, nil)
        // EVP_Digest fails only on allocation failure or a missing algorithm: a broken OpenSSL install.
        precondition(status == 1 && length == 32, "OpenSSL EVP_Digest(SHA-256) failed")
    }

    /// The digest of a string's UTF-8 bytes.
    public static func digest(_ text: String) -> [UInt8] {
        digest(text.utf8)
    }

    /// The digest as 64 lowercase hexadecimal characters.
    public static func hexDigest(_ bytes: some Collection<UInt8>) -> String {
        hex(digest(bytes))
    }
}

extension PayloadHash {
    /// The SHA-256 of `bytes` (a frame's canonical content).
    public init(sha256Of bytes: some Collection<UInt8>) {
        self.init { output in
            if bytes.withContiguousStorageIfAvailable({ SHA256.digest($0, into: output) }) == nil {
                Array(bytes).withUnsafeBufferPointer { SHA256.digest($0, into: output) }
            }
        }
    }

    /// The SHA-256 of a string's UTF-8 bytes.
    public init(sha256Of text: String) {
        self.init(sha256Of: text.utf8)
    }
}

/// A message digest implementation fetched once for the life of the process.
///
/// `@unchecked Sendable`: the handle is written once, in `init`, and never freed or changed;
/// OpenSSL documents fetched `EVP_MD` objects as safe to use from any number of threads at once
/// (they are reference-counted, immutable method tables; see OpenSSL's crypto(7), "Fetching").
private final class FetchedDigest: @unchecked Sendable {
    let handle: OpaquePointer

    init(name: String) {
        guard let handle = EVP_MD_fetch(nil, name, nil) else {
            preconditionFailure("OpenSSL has no \(name) implementation (is libssl3 installed?)")
        }
        self.handle = handle
    }
}

/// Lowercase hexadecimal text of `bytes`.
public func hex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef")
    var text = ""
    for byte in bytes {
        text.append(digits[Int(byte >> 4)])
        text.append(digits[Int(byte & 0x0f)])
    }
    return text
}

/// Compares two byte strings in time that depends only on their lengths, not their contents.
public func constantTimeEquals(_ left: [UInt8], _ right: [UInt8]) -> Bool {
    guard left.count == right.count else { return false }
    guard !left.isEmpty else { return true }
    return left.withUnsafeBytes { lhs in
        right.withUnsafeBytes { rhs in
            CRYPTO_memcmp(lhs.baseAddress, rhs.baseAddress, lhs.count) == 0
        }
    }
}
