import Foundation

/// Any JSON value, decoded without losing whether a value was a boolean, an integer or a string: what dialects read
/// vendors' bodies into, leniently, before they decide what a field means.
public enum JSONValue: Codable, Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .int(i)
        } else if let d = try Self.number(c, at: decoder.codingPath) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else {
            // Not `try?`: an error inside the array (a number out of range) must come out as itself.
            do {
                self = .array(try c.decode([JSONValue].self))
            } catch DecodingError.typeMismatch(_, let context) where context.codingPath.count == decoder.codingPath.count {
                self = .object(try c.decode([String: JSONValue].self))
            }
        }
    }

    /// A number beyond `Double` (`1e400`): the decoder refuses it, and this says where, so the answer can name
    /// the field instead of calling the whole body invalid.
    public struct NumberOutOfRange: Error, Sendable {
        /// The field, as `resource.cpuCount` or `docker.exposeTcpPorts[0]`.
        public var field: String
    }

    /// The value as a `Double`, nil when it is not a number; throws `NumberOutOfRange` for a number no `Double` holds.
    private static func number(_ c: any SingleValueDecodingContainer, at path: [any CodingKey]) throws -> Double? {
        do {
            return try c.decode(Double.self)
        } catch DecodingError.typeMismatch {
            return nil
        } catch {
            // Foundation reports an unrepresentable number as corrupted data (or, in newer versions, an error of
            // its own); either way the token was a number, and not one JSON can carry into Swift.
            throw NumberOutOfRange(field: Self.field(path))
        }
    }

    /// A coding path written as the vendor names fields: `data.input[0].hdfs`.
    public static func field(_ path: [any CodingKey]) -> String {
        var out = ""
        for key in path {
            // An array index; a map key that reads as a number ("5") has an intValue too, but its own string.
            if let i = key.intValue, key.stringValue != String(i) {
                out += "[\(i)]"
            } else {
                out += out.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return out
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// The value at a dotted path such as `docker.image` or `data.input[0].hdfs`, for error messages.
    public func at(_ path: String) -> JSONValue? {
        var current: JSONValue? = self
        for raw in path.split(separator: ".") {
            var part = Substring(raw)
            var indices: [Int] = []
            while let open = part.lastIndex(of: "["), part.hasSuffix("]"), let i = Int(part[part.index(after: open)..<part.index(before: part.endIndex)]) {
                indices.insert(i, at: 0)
                part = part[..<open]
            }
            if case .object(let o)? = current { current = o[String(part)] } else { return nil }
            for i in indices {
                if case .array(let a)? = current, a.indices.contains(i) { current = a[i] } else { return nil }
            }
        }
        return current
    }

    /// How the value reads in a message: strings bare, everything else as JSON.
    public var display: String {
        switch self {
        case .string(let s): return s
        case .null: return ""
        case .bool(let b): return String(b)
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        default: return String(decoding: (try? JSONEncoder().encode(self)) ?? Data(), as: UTF8.self)
        }
    }
}

// MARK: lenient reading

extension JSONValue {
    /// Parses a body; a number beyond `Double` throws `NumberOutOfRange` naming its field, anything else that is not
    /// JSON gives nil.
    public static func parse(_ data: Data) throws(NumberOutOfRange) -> JSONValue? {
        do {
            return try JSONDecoder().decode(JSONValue.self, from: data)
        } catch let e as NumberOutOfRange {
            throw e
        } catch {
            return nil
        }
    }

    /// A member of an object; nil for anything else or a missing key.
    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    /// The members of an object, nil for anything else.
    public var objectValue: [String: JSONValue]? {
        if case .object(let o) = self { return o }
        return nil
    }

    /// A string, nil for anything else.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// What vendors' clients send for an integer: a JSON integer, or a string of one (`"18888"`). Nil for
    /// anything else, including whole doubles and numbers out of `Int`'s range.
    public var lenientInt: Int? {
        switch self {
        case .int(let i): return Int(exactly: i)
        case .string(let s):
            let t = s.trimmingCharacters(in: .whitespaces)
            guard !t.isEmpty, t.count <= 19, t.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "-") }) else { return nil }
            return Int(t)
        default: return nil
        }
    }

    /// A boolean, or the strings `true`/`false` as some clients send them.
    public var lenientBool: Bool? {
        switch self {
        case .bool(let b): return b
        case .string(let s) where s.lowercased() == "true": return true
        case .string(let s) where s.lowercased() == "false": return false
        default: return nil
        }
    }

    /// The value's JSON type in words, for messages.
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .int, .double: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}
