import CanopyHTTP

/// The dialect's numeric request fields are all integers (CPU and GPU counts, megabytes, ports). A body may carry
/// any number there (`1e30`, `99999999999999999999`, `1.5`, and from XML anything `Double` reads); Foundation's
/// decoder refuses those for an `Int` without naming the field, so they are refused here first, naming it.
enum BodyNumbers {
    /// The fields that hold integers, wherever they occur (one list, with the XML conversion's).
    static let integers = XMLBodies.integers

    /// Throws a 400 for the first integer field whose value is a number but not an `Int`.
    static func check(_ value: JSONValue) throws(DataForestError) {
        try check(value, key: nil, path: "")
    }

    private static func check(_ value: JSONValue, key: String?, path: String) throws(DataForestError) {
        switch value {
        case .object(let o):
            for k in o.keys.sorted() {
                if let v = o[k] { try check(v, key: k, path: path.isEmpty ? k : "\(path).\(k)") }
            }
        case .array(let items):
            for (i, item) in items.enumerated() { try check(item, key: key, path: "\(path)[\(i)]") }
        case .double(let d):
            guard let key, integers.contains(key) else { return }
            // Int64 covers Int on the 64-bit platforms Canopy runs on; a whole double in range would have decoded as .int.
            let why = d.isFinite && d == d.rounded() ? "is out of range" : "must be an integer"
            throw DataForestError.invalid(path, value.display, why)
        case .null, .bool, .int, .string:
            return
        }
    }
}
