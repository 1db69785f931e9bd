// Fuzzes SCNet's create body as POST /ai/openapi/v2/instance-service/task reads it: parsed leniently into a
// JSONValue, then InstanceRequest.parse (compiled in, with SCNetError and SCNetMapping). Every refusal must carry a
// documented code; every acceptance must be within the bounds the rest of Canopy relies on.
import CanopyCore
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let body = Data(UnsafeBufferPointer(start: data, count: size))
    guard let value = try? JSONValue.parse(body) else { return 0 }
    let request: InstanceRequest
    do throws(SCNetError) {
        request = try InstanceRequest.parse(value)
    } catch {
        guard error.code == "10003" || error.code == "10004", error.status == 200, !error.msg.isEmpty else {
            fatalError("an undocumented refusal: \(error)")
        }
        return 0
    }
    guard (1...1024).contains(request.cpuNumber), (0...1024).contains(request.gpuNumber), (1...(64 << 20)).contains(request.ramSize),
        (1...InstanceRequest.maxTasks).contains(request.taskNumber), request.ports.allSatisfy({ (1...65535).contains($0.containerPort) }),
        request.ports.count <= 16, request.mounts.count <= 16, InstanceRequest.taskTypes.contains(request.taskType),
        !request.name.trimmingCharacters(in: .whitespaces).isEmpty, request.startScriptContent.utf8.count <= 65536
    else {
        fatalError("accepted out of bounds: \(request)")
    }
    if case .seconds(let s) = request.lease, !(1...Lease.maxSeconds).contains(s) { fatalError("lease out of bounds: \(request.lease)") }
    let command = InstanceRequest.command(service: ["svc"], script: request.useStartScript ? request.startScriptContent : nil, scope: request.startScriptActionScope)
    guard command.last == "svc" else { fatalError("the service is not what runs last: \(command)") }
    return 0
}
