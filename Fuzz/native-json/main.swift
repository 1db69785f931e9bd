// Fuzzes the native API's JSON body as POST /api/v1/workloads reads it: the body's shape checked first (unknown
// fields at any depth, nulls, integers that do not fit: BodyShape, compiled in read-only), then
// CreateWorkloadRequest decoded with JSONDecoder, its spec built and the request encoded and decoded again.
import CanopyCore
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let body = Data(UnsafeBufferPointer(start: data, count: size))
    if let json = try? JSONSerialization.jsonObject(with: body, options: [.fragmentsAllowed]) {
        do { try CreateWorkloadRequest.shape.check(json) } catch { return 0 }
    }
    guard let request = try? JSONDecoder().decode(CreateWorkloadRequest.self, from: body) else { return 0 }
    let spec = request.spec
    _ = spec.resources
    guard let again = try? JSONEncoder().encode(request) else { return 0 }
    guard let back = try? JSONDecoder().decode(CreateWorkloadRequest.self, from: again) else {
        fatalError("an accepted request does not read back: \(String(decoding: again, as: UTF8.self))")
    }
    guard back.resources == request.resources, back.maxDuration == request.maxDuration else {
        fatalError("resources or duration changed on the way back: \(String(decoding: again, as: UTF8.self))")
    }
    return 0
}
