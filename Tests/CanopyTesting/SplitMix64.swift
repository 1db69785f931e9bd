/// A small deterministic generator, so a failing mutation is the same on every run.
public struct SplitMix64 {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension SplitMix64 {
    /// `bytes` with one to four byte-level mutations: a byte set to one of `interesting` or to any value, `insert`
    /// put in, or a byte removed.
    public mutating func mutate(_ bytes: [UInt8], interesting: [UInt8], insert: [UInt8]) -> [UInt8] {
        var bytes = bytes
        for _ in 0..<(1 + Int(next() % 4)) where !bytes.isEmpty {
            let at = Int(next() % UInt64(bytes.count))
            switch next() % 4 {
            case 0: bytes[at] = interesting[Int(next() % UInt64(interesting.count))]
            case 1: bytes[at] = UInt8(truncatingIfNeeded: next())
            case 2: bytes.insert(contentsOf: insert, at: at)
            default: bytes.remove(at: at)
            }
        }
        return bytes
    }
}
