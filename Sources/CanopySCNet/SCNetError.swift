import Foundation

/// An answer in SCNet's envelope, `{"code": "<string>", "msg": ..., "data": ...}`. The vendor answers application
/// errors with HTTP 200 and a code other than "0", and so does Canopy: every code below goes with 200, except a path
/// the dialect does not have (404) and a body over 1 MiB (413), which never reach an operation.
struct SCNetError: Error, Sendable, Equatable {
    var code: String
    var msg: String
    /// The HTTP status it goes with.
    var status = 200

    /// 10001: internal error (what is not the caller's fault; the detail stays in the server's log).
    static let internalError = SCNetError(code: "10001", msg: "internal error")
    /// 10003: a required parameter is missing.
    static func missing(_ field: String) -> SCNetError { SCNetError(code: "10003", msg: "missing parameter: \(field)") }
    /// 10004: a parameter is invalid (also what another tenant's instance, or one that does not exist, gets).
    static func invalid(_ field: String, _ why: String) -> SCNetError { SCNetError(code: "10004", msg: "invalid parameter \(field): \(why)") }
    /// 10007: the user is frozen.
    static let frozen = SCNetError(code: "10007", msg: "the user is frozen")
    /// 10008: not allowed.
    static func permission(_ why: String) -> SCNetError { SCNetError(code: "10008", msg: "insufficient permission: \(why)") }
    /// 10009: no valid credential (a missing, expired, forged or revoked token; a failed sign-in).
    static func unauthenticated(_ why: String) -> SCNetError { SCNetError(code: "10009", msg: why) }
    /// 10011: too large.
    static let tooLarge = SCNetError(code: "10011", msg: "request body larger than 1 MiB", status: 413)
    /// 716865: creating the instance failed for a reason other than its parameters.
    static func createFailed(_ why: String) -> SCNetError { SCNetError(code: "716865", msg: "create task error: \(why)") }
    /// 716864: a script could not be run.
    static func scriptFailed(_ why: String) -> SCNetError { SCNetError(code: "716864", msg: "script execution error: \(why)") }
    /// 716866: deleting failed.
    static func deleteFailed(_ why: String) -> SCNetError { SCNetError(code: "716866", msg: "delete task failed: \(why)") }
    /// 716870: execute-script on an instance with no running task to run it in.
    static func instanceCount(_ why: String) -> SCNetError { SCNetError(code: "716870", msg: "instance count error: \(why)") }
}
