import CanopyCore
import Foundation

/// The fields a JSON request body may carry, at every depth. Checked before decoding, so a typo in a nested
/// object (`resources.gpu` for `resources.gpus`) is refused naming its path instead of being dropped, and a
/// `null` is refused wherever it appears: no field of the native API is nullable, leaving one out is how to
/// ask for its default.
public indirect enum BodyShape: Sendable {
    /// An object with exactly these fields (each optional as far as this check goes; decoding enforces required ones).
    case object([String: BodyShape])
    /// An object with free keys (`env`, `labels`), each value of this shape.
    case map(BodyShape)
    /// An array, each element of this shape.
    case array(BodyShape)
    /// A scalar, or a value whose type decoding checks (`cpu` is a number or a string).
    case value
    /// A field that takes whole numbers: a number given must fit a 64-bit integer (decoding would say only that the
    /// body is not valid JSON, without the field). Other types are left to decoding.
    case integer
    /// A whole number (checked as `integer`) or an object of this shape (`ports`: `8888` or `{"port": 8888}`).
    case integerOr(BodyShape)

    /// The field names of an object shape, sorted; empty for other shapes.
    public var fieldNames: [String] {
        if case .object(let fields) = self { return fields.keys.sorted() }
        return []
    }

    /// Refuses the first unknown field or null in `json` (as `JSONSerialization` reads it), naming its path.
    /// Values of the wrong type are left to decoding, which names them too.
    public func check(_ json: Any, at path: String = "") throws {
        if json is NSNull {
            throw CanopyError.invalid(path.isEmpty ? "body" : path, "\"\(path)\" must not be null; leave the field out to get its default")
        }
        switch self {
        case .value:
            return
        case .integer:
            guard let n = json as? NSNumber, !(json is Bool), Int(n.stringValue) == nil else { return }
            throw CanopyError.invalid(path, "\"\(path)\" must be a whole number from \(Int.min) to \(Int.max)")
        case .integerOr(let shape):
            if json is [String: Any] { try shape.check(json, at: path) } else { try BodyShape.integer.check(json, at: path) }
        case .object(let fields):
            guard let dict = json as? [String: Any] else { return }
            for key in dict.keys.sorted() {
                let child = Self.join(path, key)
                guard let shape = fields[key] else {
                    throw CanopyError.invalid(
                        child, "unknown field \"\(child)\"; known fields\(path.isEmpty ? "" : " of \(path)"): \(fieldNames.joined(separator: ", "))")
                }
                try shape.check(dict[key]!, at: child)
            }
        case .map(let shape):
            guard let dict = json as? [String: Any] else { return }
            for key in dict.keys.sorted() { try shape.check(dict[key]!, at: Self.join(path, key)) }
        case .array(let shape):
            guard let items = json as? [Any] else { return }
            for (i, item) in items.enumerated() { try shape.check(item, at: "\(path)[\(i)]") }
        }
    }

    static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// An object whose fields are all scalars.
    public static func flat(_ names: String...) -> BodyShape { .object(Dictionary(uniqueKeysWithValues: names.map { ($0, .value) })) }
}
