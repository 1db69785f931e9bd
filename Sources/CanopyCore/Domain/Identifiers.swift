/// Generates identifiers: a UUID's 128 random bits written in base62 (at most 22 characters),
/// the form NCP uses, so every dialect can show the same id.
public struct IDGenerator: Sendable {
    private let next: @Sendable () -> String

    /// Creates a generator from a closure (tests pass a deterministic one).
    public init(_ next: @escaping @Sendable () -> String) { self.next = next }

    /// Returns a new identifier.
    public func callAsFunction() -> String { next() }

    /// Random base62 identifiers.
    public static let random = IDGenerator { Base62.encode(UInt64.random(in: .min ... .max), UInt64.random(in: .min ... .max)) }
}

/// Base62 encoding of 128-bit values.
public enum Base62 {
    static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// Encodes a 128-bit value given as two halves; at most 22 characters.
    public static func encode(_ high: UInt64, _ low: UInt64) -> String {
        var hi = high
        var lo = low
        var digits: [UInt8] = []
        repeat {
            // Long division of (hi, lo) by 62.
            let (qHi, rHi) = hi.quotientAndRemainder(dividingBy: 62)
            let (qLo, r) = UInt64(62).dividingFullWidth((high: rHi, low: lo))
            hi = qHi
            lo = qLo
            digits.append(alphabet[Int(r)])
        } while hi != 0 || lo != 0
        return String(decoding: digits.reversed(), as: UTF8.self)
    }

    /// Whether a string could be an identifier: 1 to 22 base62 characters.
    public static func isValid(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 22 && s.utf8.allSatisfy { alphabet.contains($0) }
    }
}

/// Lowercase hexadecimal text of bytes (digests, MACs), without `String(format:)`, which costs microseconds a byte:
/// the proxy hashes a bearer token on every request.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// The bytes as lowercase hex, two digits each.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes of hex text (either case), nil unless it is whole pairs of hex digits.
    public static func decode(_ text: String) -> [UInt8]? {
        let u = Array(text.utf8)
        guard u.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(u.count / 2)
        var i = 0
        while i < u.count {
            guard let hi = value(u[i]), let lo = value(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}
