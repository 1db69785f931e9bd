import CanopyCore
import Hummingbird

/// The methods each route path answers, for `405 Method Not Allowed` with an `Allow` header: a path the API has,
/// asked with a method it does not take, is not a missing resource.
struct AllowedMethods: Sendable {
    let routes: [(segments: [Substring], methods: [String])]

    /// Builds the table from (path template, method) pairs; `{name}` in a template matches any one segment.
    init(_ pairs: [(String, HTTPRequest.Method)]) {
        var order: [String] = []
        var methods: [String: [String]] = [:]
        for (path, method) in pairs {
            if methods[path] == nil { order.append(path) }
            methods[path, default: []].append(method.rawValue)
        }
        routes = order.map { path in (path.split(separator: "/"), methods[path]!) }
    }

    /// The methods allowed on a request path, or nil when no route has that path. As the router does, a literal
    /// segment wins over a `{name}` at the same depth: `/images/pull` is the pull route's, not `/images/{name}`'s.
    func methods(for path: String) -> [String]? {
        let segments = path.split(separator: "/")
        var candidates = routes.filter { route in
            route.segments.count == segments.count
                && zip(route.segments, segments).allSatisfy { template, segment in template.hasPrefix("{") || template == segment }
        }
        for depth in segments.indices where candidates.contains(where: { !$0.segments[depth].hasPrefix("{") }) {
            candidates.removeAll { $0.segments[depth].hasPrefix("{") }
        }
        let found = candidates.flatMap(\.methods)
        return found.isEmpty ? nil : found
    }
}

/// Strict reading of query parameters.
enum QueryValue {
    /// A boolean parameter: `true` or `false`, as the document says; nil when absent, a 400 naming `field` otherwise.
    static func bool(_ value: String?, field: String) throws -> Bool? {
        guard let value else { return nil }
        switch value {
        case "true": return true
        case "false": return false
        default: throw CanopyError.invalid(field, "\(field) must be true or false")
        }
    }
}
