import requests
import json
url = "https://api01.xxx.com:65106/ai/openapi/v2/instance-service/task"
payload = json.dumps({
"instanceServiceName": "Instances_2205113838",
"description": "",
"taskType": "ssh",
"acceleratorType": "gpu",
"version": "jupyter:4.4-py3.7-cpu",
"imagePath": "10.0.35.26:5000/gpu/admin/base/jupyter:4.4-py3.7-cpu",
"timeoutLimit": "unlimited",
"taskNumber": 1,
"resourceGroup": "TeslaM40",
"useStartScript": False,
"startScriptActionScope": "all",
"startScriptContent": "",
"cpuNumber": 3,
"ramSize": 15360,
"gpuNumber": 1,
"mountInfoList": [
{
"sourcePath": "/public1/home/lizb0530d/test_mount",
"targetPath": "/mnt/test_mount",
"type": "data"
}
],
"containerPortInfoList": [
{
"protocolType": "HTTP",
"containerPort": "18888"
}
]
})
headers = {
'token': 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjb21wdXRlVXNlciI6InNsdXJtdGVzdCIsImFjY291bnRTdGF0dXMiOiJUcmlhbCIsImNyZWF0b3IiOiJhYyIsInJvbGUiOiIxIiwiZXhwaXJlVGltZSI6IjE2ODYxMjMzNDY1NjgiLCJjbHVzdGVySWQiOiIxMTExMiIsImludm9rZXIiOiI2MDQ4Y2U3YmExNWMyYWYyZThjZWMxMjk5MWVjMTNjZiIsInVzZXIiOiJzbHVybXRlc3QiLCJ1c2VySWQiOiIxMTY1NTA0ODU0MSJ9.iQUBzN32jiCeeFuJ9lFS_XjBpxenEEupQRiyA3Ef334',
'Content-Type': 'application/json'
}
response = requests.request("POST", url, headers=headers, data=payload)
print(response.text)
