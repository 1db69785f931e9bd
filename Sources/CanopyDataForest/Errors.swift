import CanopyCore
import CanopyHTTP
import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// An answer in Data Forest's own error shapes: `{"success": false, "message": ...}` from the service, or the API
/// gateway's `{"error": {"errorCode", "message", "details"}}` for authentication and size limits.
struct DataForestError: Error, Sendable {
    var status: HTTPResponse.Status
    var message: String
    /// Set for errors the API gateway answers, before the service is reached.
    var gatewayCode: String?
    var details: String?
    /// Extra fields the vendor adds to some refusals (the app's id when killing a finished app).
    var id: String?

    /// 400 `invalid request parameter (FIELD, 'VALUE'). WHY`, the vendor's wording.
    static func invalid(_ field: String, _ value: String, _ why: String) -> DataForestError {
        DataForestError(status: .badRequest, message: "invalid request parameter (\(field), '\(value)'). \(why)")
    }

    /// 400 `invalid request parameters` with a detail.
    static func badRequest(_ detail: String) -> DataForestError {
        DataForestError(status: .badRequest, message: "invalid request parameters. \(detail)")
    }

    /// 404 `no such element`: also what another tenant's objects look like.
    static let notFound = DataForestError(status: .notFound, message: "no such element")
    /// 403.
    static let forbidden = DataForestError(status: .forbidden, message: "not allowed to access")
    /// 400 quota.
    static func quota(_ detail: String) -> DataForestError {
        DataForestError(status: .badRequest, message: "exceeded limit on resource quota. \(detail)")
    }

    /// 413 from the API gateway.
    static func tooLarge(_ details: String) -> DataForestError {
        DataForestError(status: .contentTooLarge, message: "Request Entity Too Large", gatewayCode: "430", details: details)
    }

    /// 500, for what is not the caller's fault.
    static let unexpected = DataForestError(status: .internalServerError, message: "unexpected error")

    /// 401 from the API gateway.
    static func authentication(_ details: String) -> DataForestError {
        DataForestError(status: .unauthorized, message: "Authentication Failed", gatewayCode: "200", details: details)
    }

    /// 400 for an XML body that cannot be read, naming the field when one field's value is at fault.
    static func from(_ error: XMLBodyError) -> DataForestError {
        guard let field = error.field else { return .badRequest(error.message) }
        return .invalid(field, error.value ?? "", error.message)
    }

    /// Maps Canopy's own errors (from the shared services) onto the vendor's codes, naming the vendor's fields.
    /// `nativeFields`: the error names Canopy's fields (from the shared services), not the request's own.
    static func from(_ error: CanopyError, nativeFields: Bool = true, body: JSONValue? = nil) -> DataForestError {
        switch error.code {
        case .invalidArgument, .unschedulable, .alreadyExists, .conflict:
            guard let field = error.field else { return .badRequest(error.message) }
            let vendorField = nativeFields ? DataForestFields.vendor(field) : field
            let value = body?.at(vendorField)?.display ?? ""
            return .invalid(vendorField, value, error.message)
        // Something a request names that does not exist (an image not in the catalog): the request's fault, named.
        case .notFound where error.field != nil && nativeFields:
            let vendorField = DataForestFields.vendor(error.field!)
            return .invalid(vendorField, body?.at(vendorField)?.display ?? "", error.message)
        case .notFound: return .notFound
        case .permissionDenied: return .forbidden
        case .quotaExceeded: return .quota(error.message)
        case .unauthenticated: return .authentication(error.message)
        case .payloadTooLarge:
            return .tooLarge(error.message)
        case .unavailable, .internal:
            return .unexpected
        }
    }
}

/// Native field paths as the vendor names them.
enum DataForestFields {
    static let table = FieldNames([
        "resources.gpuModel": "resource.gpuModel", "resources.gpus": "resource.gpuCount", "resources.cpu": "resource.cpuCount",
        "resources.memory": "resource.memoryMb", "command": "docker.command", "workdir": "docker.workdir", "ports": "docker.exposeTcpPorts",
        "env": "docker.env", "queue": "queueName", "name": "namePrefix", "tasks": "resource", "image": "docker.image",
    ])

    static func vendor(_ field: String) -> String {
        if let named = table.vendor(field) { return named }
        if field.hasPrefix("data.inputs[") {
            return "data.input[" + field.dropFirst("data.inputs[".count).replacingOccurrences(of: "].source", with: "].hdfs")
        }
        if field.hasPrefix("data.outputs[") {
            return "data.output[" + field.dropFirst("data.outputs[".count).replacingOccurrences(of: "].destination", with: "].hdfs")
        }
        return field
    }
}

/// Data Forest's envelope for the shared `DialectErrorMiddleware`: the service's `{"success": false, "message"}` (in
/// XML when the caller speaks XML), or the gateway's error object; never a 5xx for bad input.
struct DataForestEnvelope: DialectEnvelope {
    typealias VendorError = DataForestError

    func render(_ e: DataForestError, for request: Request) -> Response {
        let body: Data
        if let code = e.gatewayCode {
            var inner: [String: JSONValue] = ["errorCode": .string(code), "message": .string(e.message)]
            if let d = e.details { inner["details"] = .string(d) }
            body = (try? JSONEncoder().encode(JSONValue.object(["error": .object(inner)]))) ?? Data()
            return Response(status: e.status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
        var object: [String: JSONValue] = ["success": .bool(false), "message": .string(e.message)]
        if let id = e.id { object["id"] = .string(id) }
        return Negotiation.response(.object(object), root: "ErrorResponse", status: e.status, request: request)
    }

    func render(_ e: CanopyError, for request: Request) -> Response {
        render(.from(e), for: request)
    }
}

/// JSON or XML, from `Content-Type` for requests and `Accept` (else the request's type) for responses.
enum Negotiation {
    static func requestIsXML(_ request: Request) -> Bool {
        request.headers[.contentType]?.lowercased().contains("xml") ?? false
    }

    static func wantsXML(_ request: Request) -> Bool {
        if let accept = request.headers[.accept]?.lowercased() {
            let xml = accept.range(of: "xml")
            let json = accept.range(of: "json")
            if let xml, let json { return xml.lowerBound < json.lowerBound }
            if xml != nil { return true }
            if json != nil { return false }
        }
        return requestIsXML(request)
    }

    /// The answer in the caller's format, encoded once.
    static func response(_ value: JSONValue, root: String, status: HTTPResponse.Status = .ok, request: Request) -> Response {
        if wantsXML(request) {
            let xml = XMLBodies.xml(value, root: root)
            return Response(status: status, headers: [.contentType: "application/xml;charset=UTF-8"], body: .init(byteBuffer: ByteBuffer(bytes: xml)))
        }
        let json = (try? JSONEncoder().encode(value)) ?? Data()
        return Response(status: status, headers: [.contentType: "application/json;charset=UTF-8"], body: .init(byteBuffer: ByteBuffer(bytes: json)))
    }
}
