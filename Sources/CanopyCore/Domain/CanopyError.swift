/// A transport-neutral error: every layer throws it and every dialect renders it in its own envelope.
public struct CanopyError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong, in a stable machine-readable form.
    public enum Code: String, Sendable, Codable {
        case invalidArgument = "InvalidArgument"
        case notFound = "NotFound"
        case alreadyExists = "AlreadyExists"
        case conflict = "Conflict"
        case unauthenticated = "Unauthenticated"
        case permissionDenied = "PermissionDenied"
        case unschedulable = "Unschedulable"
        case payloadTooLarge = "PayloadTooLarge"
        case quotaExceeded = "QuotaExceeded"
        case unavailable = "Unavailable"
        case `internal` = "Internal"
    }

    /// The stable code.
    public var code: Code
    /// A sentence a person can act on.
    public var message: String
    /// The offending field, as a dotted path in the caller's request (`resources.gpus`), when there is one.
    public var field: String?

    /// Creates an error.
    public init(_ code: Code, _ message: String, field: String? = nil) {
        self.code = code
        self.message = message
        self.field = field
    }

    public var description: String {
        field.map { "\(code.rawValue): \(message) (field \($0))" } ?? "\(code.rawValue): \(message)"
    }

    /// An invalid-argument error naming its field.
    public static func invalid(_ field: String, _ message: String) -> CanopyError {
        CanopyError(.invalidArgument, message, field: field)
    }

    /// The error for anything the caller may not see: indistinguishable from a missing object.
    public static func notFound(_ what: String, _ id: String) -> CanopyError {
        CanopyError(.notFound, "no \(what) with id \(id)")
    }
}
