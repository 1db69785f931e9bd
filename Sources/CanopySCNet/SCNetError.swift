import CanopyCore
import CanopyHTTP
import Foundation
import HTTPTypes
import Hummingbird

/// An answer in SCNet's envelope, `{"code": "<string>", "msg": ..., "data": ...}`. The vendor answers application
/// errors with HTTP 200 and a code other than "0", and so does Canopy: every code below goes with 200, except a path
/// the dialect does not have (404) and a body over 1 MiB (413), which never reach an operation.
struct SCNetError: Error, Sendable, Equatable {
    var code: String
    var msg: String
    var status: HTTPResponse.Status = .ok

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
    static let tooLarge = SCNetError(code: "10011", msg: "request body larger than 1 MiB", status: .contentTooLarge)
    /// 716865: creating the instance failed for a reason other than its parameters.
    static func createFailed(_ why: String) -> SCNetError { SCNetError(code: "716865", msg: "create task error: \(why)") }
    /// 716864: a script could not be run.
    static func scriptFailed(_ why: String) -> SCNetError { SCNetError(code: "716864", msg: "script execution error: \(why)") }
    /// 716866: deleting failed.
    static func deleteFailed(_ why: String) -> SCNetError { SCNetError(code: "716866", msg: "delete task failed: \(why)") }
    /// 716870: execute-script on an instance with no running task to run it in.
    static func instanceCount(_ why: String) -> SCNetError { SCNetError(code: "716870", msg: "instance count error: \(why)") }

    /// Canopy's errors in the vendor's codes, naming the vendor's fields.
    static func from(_ e: CanopyError) -> SCNetError {
        let field = e.field.map { SCNetFields.table.vendor($0) ?? $0 }
        switch e.code {
        case .invalidArgument, .unschedulable, .conflict, .alreadyExists, .notFound:
            return SCNetError(code: "10004", msg: field.map { "invalid parameter \($0): \(e.message)" } ?? e.message)
        case .permissionDenied, .quotaExceeded: return .permission(e.message)
        case .unauthenticated: return .unauthenticated(e.message)
        case .payloadTooLarge: return .tooLarge
        case .unavailable, .internal: return .internalError
        }
    }
}

/// Canopy's field paths as an SCNet create body names them.
enum SCNetFields {
    static let table = FieldNames([
        "resources.gpus": "gpuNumber", "resources.cpu": "cpuNumber", "resources.memory": "ramSize", "tasks": "taskNumber", "name": "instanceServiceName",
        "image": "imagePath", "lease": "timeoutLimit", "ports": "containerPortInfoList", "mounts": "mountInfoList", "queue": "resourceGroup",
        "app": "taskType", "command": "startScriptContent",
    ])
}

/// The envelope, for the shared error middleware.
struct SCNetEnvelope: DialectEnvelope {
    typealias VendorError = SCNetError

    func render(_ e: SCNetError, for request: Request) -> Response {
        SCNetResponse.json(["code": .string(e.code), "msg": .string(e.msg), "data": .null], status: e.status)
    }

    func render(_ e: CanopyError, for request: Request) -> Response {
        if e.code == .notFound && e.field == nil {
            // No such route under the dialect's paths.
            return render(SCNetError(code: "10004", msg: "no such API: \(request.method.rawValue) \(request.uri.path)", status: .notFound), for: request)
        }
        return render(.from(e), for: request)
    }
}

enum SCNetResponse {
    static func json(_ object: [String: JSONValue], status: HTTPResponse.Status = .ok) -> Response {
        let body = (try? JSONEncoder().encode(JSONValue.object(object))) ?? Data()
        return Response(status: status, headers: [.contentType: "application/json;charset=UTF-8"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// Success: `{"code": "0", "msg": "success", "data": ...}`.
    static func ok(_ data: JSONValue, msg: String = "success") -> Response {
        json(["code": .string("0"), "msg": .string(msg), "data": data])
    }
}
