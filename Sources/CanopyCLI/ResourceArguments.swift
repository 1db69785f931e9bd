import ArgumentParser
import CanopyCore
import Foundation

/// The CLI's reading of resource quantities: the forms `Quantity` accepts, less the ones a person is likely to
/// mean differently from how they would be read, each refused with the form they probably meant.
enum ResourceArguments {
    /// CPUs as millicores: `2`, `0.5`, `500m`; more than zero.
    static func cpus(_ text: String, option: String = "--cpus") throws -> Int {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.hasPrefix("-") { throw ValidationError("\(option) must be positive, e.g. 2, 0.5 or 500m") }
        guard let millis = Quantity.parseCPU(t) else { throw ValidationError("\(option): \"\(text)\" is not a number of CPUs such as 2, 0.5 or 500m") }
        guard millis > 0 else { throw ValidationError("\(option) must be positive, e.g. 2, 0.5 or 500m") }
        return millis
    }

    /// Units that read one way for Kubernetes (`m` is milli), another for Docker (`m` is MiB) and a third for
    /// people (MB): refused, with the binary unit as the suggestion.
    private static let ambiguousUnits: Set<String> = [
        "k", "m", "g", "t", "kb", "mb", "gb", "tb", "ki", "mi", "gi", "ti", "kib", "mib", "gib", "tib",
    ]

    /// Memory in MiB: `512Mi`, `8Gi`, `1G`, `1.5Gi`, or a number of bytes of at least 1Mi; more than zero.
    static func memory(_ text: String, option: String = "--memory") throws -> Int {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.hasPrefix("-") { throw ValidationError("\(option) must be positive, e.g. 512Mi or 8Gi") }
        let number = String(t.prefix { $0.isNumber || $0 == "." })
        let unit = String(t.dropFirst(number.count))
        if !number.isEmpty, unit.first?.isLowercase == true, ambiguousUnits.contains(unit.lowercased()) {
            let suggestion = number + unit.prefix(1).uppercased() + "i"
            let why = unit.lowercased().hasPrefix("m") ? "lowercase m means milli, as in --cpus 500m" : "units are case-sensitive: Ki, Mi, Gi, Ti or K, M, G, T"
            throw ValidationError("\(option) \(text): \(why); did you mean \(suggestion)?")
        }
        if unit.isEmpty, let bytes = Double(number), bytes > 0, bytes < 1_048_576 {
            throw ValidationError("\(option) \(text) is \(number) bytes; did you mean \(number)Mi?")
        }
        guard let mib = Quantity.parseMemory(t) else {
            throw ValidationError("\(option): \"\(text)\" is not a size such as 512Mi or 8Gi (units: Ki, Mi, Gi, Ti; K, M, G, T for powers of 1000)")
        }
        guard mib > 0 else { throw ValidationError("\(option) must be positive, e.g. 512Mi or 8Gi") }
        return mib
    }

    /// A duration in seconds: `90s`, `30m`, `1h30m`, `2d`; more than zero.
    static func duration(_ text: String, option: String) throws -> Int {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.hasPrefix("-") { throw ValidationError("\(option) must be positive, e.g. 30m or 2h") }
        guard let seconds = Quantity.parseDuration(t) else { throw ValidationError("\(option): \"\(text)\" is not a duration such as 30m, 2h or 1h30m") }
        guard seconds > 0 else { throw ValidationError("\(option) must be positive, e.g. 30m or 2h") }
        return seconds
    }
}
