/// Data could not be staged into or out of a task; the message names the input or output and why.
public struct StagingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A sentence a person can act on.
    public var message: String

    /// Creates an error.
    public init(_ message: String) { self.message = message }

    public var description: String { message }
}
