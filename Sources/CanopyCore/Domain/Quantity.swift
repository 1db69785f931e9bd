/// Parsing and formatting of the human forms of resource quantities and durations.
public enum Quantity {
    /// The most CPUs a quantity may name (a million): beyond it a count is a typo or an attack, and the products
    /// and sums of millicores the scheduler forms stay far from `Int.max`.
    public static let maxCPUs = 1_000_000

    /// Parses CPUs: `2`, `0.5`, `"1.5"`, `"500m"` (millicores). Returns millicores; nil for anything else, for
    /// negative, non-finite and out-of-range values (`1e400`, `9223372036854775807m`): overflow is a parse failure.
    public static func parseCPU(_ text: String) -> Int? {
        let t = text.trimmingWhitespace()
        if t.hasSuffix("m") {
            guard let v = Int(t.dropLast()), v >= 0, v < maxCPUs * 1000 else { return nil }
            return v
        }
        return Double(t).flatMap(cpuMillis(fromCPUs:))
    }

    /// Millicores for a number of CPUs, rounded; nil when negative, not finite, or not under `maxCPUs` once
    /// rounded (so that what `formatCPU` writes always parses again).
    public static func cpuMillis(fromCPUs cpus: Double) -> Int? {
        guard cpus.isFinite, cpus >= 0, cpus < Double(maxCPUs) else { return nil }
        let millis = Int((cpus * 1000).rounded())
        return millis < maxCPUs * 1000 ? millis : nil
    }

    /// Formats millicores: whole CPUs as `"2"`, others as `"500m"`.
    public static func formatCPU(_ millis: Int) -> String {
        millis % 1000 == 0 ? String(millis / 1000) : "\(millis)m"
    }

    private static let memoryUnits: [(String, Double)] = [
        ("Ki", 1.0 / 1024), ("Mi", 1), ("Gi", 1024), ("Ti", 1024 * 1024),
        ("K", 1000.0 / 1_048_576), ("M", 1_000_000.0 / 1_048_576), ("G", 1e9 / 1_048_576), ("T", 1e12 / 1_048_576),
        ("k", 1000.0 / 1_048_576),
    ]
    // No lowercase "m" or "g": "512m" means 512 MiB to docker, 512 MB to some, and 0.512 bytes to Kubernetes
    // (milli, as in CPUs "500m"). An ambiguous size is refused rather than guessed.

    /// The bound memory sizes stay under: 2^40 MiB, an exbibyte. Far above any node, and far from `Int.max`
    /// for the sums the scheduler forms.
    public static let maxMemoryMiB = 1 << 40

    /// Parses memory: `"512Mi"`, `"2Gi"`, `"1G"`, `"1.5Gi"`, or a plain number of bytes. Returns MiB, rounded up;
    /// nil for anything else and for negative, non-finite or sizes not under `maxMemoryMiB` (`1e400`,
    /// `9223372036854775807Gi`): overflow is a parse failure.
    public static func parseMemory(_ text: String) -> Int? {
        var t = text.trimmingWhitespace()
        if t.hasSuffix("B") || t.hasSuffix("b") { t.removeLast() }
        for (suffix, factor) in memoryUnits where t.hasSuffix(suffix) {
            guard let v = Double(t.dropLast(suffix.count)), v >= 0 else { return nil }
            return memoryMiB(fromMiB: v * factor)
        }
        guard let bytes = Double(t), bytes >= 0 else { return nil }
        return memoryMiB(fromBytes: bytes)
    }

    /// MiB for a number of bytes, rounded up; nil when negative, not finite, or not under `maxMemoryMiB`.
    public static func memoryMiB(fromBytes bytes: Double) -> Int? {
        memoryMiB(fromMiB: bytes / 1_048_576)
    }

    private static func memoryMiB(fromMiB mib: Double) -> Int? {
        // Checked before rounding (a few negative bytes round up to zero) and before it becomes an Int
        // (converting an infinite or huge Double would trap).
        guard mib.isFinite, mib >= 0 else { return nil }
        let up = mib.rounded(.up)
        guard up < Double(maxMemoryMiB) else { return nil }
        return Int(up)
    }

    /// Formats MiB as `"512Mi"`, or `"2Gi"` when whole gibibytes.
    public static func formatMemory(_ mib: Int) -> String {
        mib >= 1024 && mib % 1024 == 0 ? "\(mib / 1024)Gi" : "\(mib)Mi"
    }

    /// Parses durations: `"90s"`, `"15m"`, `"1h30m"`, `"2d"`, or a plain number of seconds. Returns seconds; nil
    /// for anything else, and when a part or the sum overflows `Int` (checked, never trapping).
    public static func parseDuration(_ text: String) -> Int? {
        let t = text.trimmingWhitespace()
        if let v = Int(t) { return v >= 0 ? v : nil }
        var total = 0
        var number = ""
        for ch in t {
            if ch.isNumber {
                number.append(ch)
                continue
            }
            guard let n = Int(number) else { return nil }
            let unit: Int
            switch ch {
            case "s": unit = 1
            case "m": unit = 60
            case "h": unit = 3600
            case "d": unit = 86400
            default: return nil
            }
            let (product, overflow) = n.multipliedReportingOverflow(by: unit)
            guard !overflow, total <= Int.max - product else { return nil }
            total += product
            number = ""
        }
        guard number.isEmpty, !t.isEmpty else { return nil }
        return total
    }

    /// Formats seconds as `"1h30m"`, `"45s"`, `"0s"`.
    public static func formatDuration(_ seconds: Int) -> String {
        if seconds == 0 { return "0s" }
        var s = seconds
        var out = ""
        for (unit, name) in [(86400, "d"), (3600, "h"), (60, "m"), (1, "s")] where s >= unit {
            out += "\(s / unit)\(name)"
            s %= unit
        }
        return out
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
