import COpenSSL

/// A bearer secret: 32 random bytes from OpenSSL's CSPRNG, printed as `PREFIX_` + base64url.
///
/// Only `SHA256.digest(token)` is ever stored; the token is high-entropy, so a plain digest
/// cannot be reversed by guessing.
public enum SecretToken {
    public static let randomByteCount = 32

    /// A new token such as `vmi_q3J…` for prefix `vmi`.
    public static func generate(prefix: String) -> String {
        var bytes = [UInt8](repeating: 0, count: randomByteCount)
        let status = RAND_bytes(&bytes, Int32(bytes.count))
        // RAND_bytes fails only when the OS entropy source is unavailable; no token is safe then.
        precondition(status == 1, "OpenSSL RAND_bytes failed: no secure randomness available")
        return prefix + "_" + base64URL(bytes)
    }

    /// Base64url without padding (RFC 4648 section 5).
    static func base64URL(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        var text = ""
        var index = 0
        while index < bytes.count {
            let chunk = bytes[index..<min(index + 3, bytes.count)]
            var value = UInt32(0)
            for (offset, byte) in chunk.enumerated() { value |= UInt32(byte) << (16 - 8 * offset) }
            let characters = chunk.count + 1
            for position in 0..<characters {
                text.append(alphabet[Int((value >> (18 - 6 * position)) & 0x3f)])
            }
            index += 3
        }
        return text
    }
}
