import CanopyCore
import CanopyHTTP
import Foundation
import HTTPTypes
import Hummingbird

extension SCNetError {
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
        SCNetResponse.json(["code": .string(e.code), "msg": .string(e.msg), "data": .null], status: HTTPResponse.Status(code: e.status))
    }

    func render(_ e: CanopyError, for request: Request) -> Response {
        render(.from(e), for: request)
    }

    func renderNoRoute(for request: Request) -> Response {
        render(SCNetError(code: "10004", msg: "no such API: \(request.method.rawValue) \(request.uri.path)", status: 404), for: request)
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
