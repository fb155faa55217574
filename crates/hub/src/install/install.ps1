# Install a Muster agent on Windows and enroll this machine with the hub that
# served this script (SPEC §10). Run in an elevated PowerShell:
#   & ([scriptblock]::Create($script)) -Token met_... [-Name N] [-Label k=v,...] [-Force]
#
# Every connection to the hub is checked against the hub's CA, named here by its
# SHA-256 (empty: the hub has a publicly trusted certificate and Windows checks it).
# Untested on Windows from the build machine (no PowerShell there): see docs/INSTALL.md.

param(
    [Parameter(Mandatory = $true)][string]$Token,
    [string]$Name = '',
    [string[]]$Label = @(),
    [switch]$Force
)

$ErrorActionPreference = 'Stop'
$HubUrl = '@HUB_URL@'
$CaHash = '@CA_HASH_HEX@'
$InstallDir = Join-Path $env:ProgramFiles 'Muster'
$Binary = Join-Path $InstallDir 'muster.exe'
$ConfigDir = Join-Path $env:ProgramData 'muster-agent'
$ServiceName = 'MusterAgent'

function Say([string]$Text) { Write-Host "muster-install: $Text" }
# Thrown, not exit: the script runs inside the operator's own PowerShell session.
function Fail([string]$Text) { throw "muster-install: error: $Text" }

function Use-HubCa {
    [Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]::Tls12
    if ($CaHash -eq '') { return }
    [Net.ServicePointManager]::ServerCertificateValidationCallback = {
        param($sender, $cert, $chain, $errors)
        $root = $chain.ChainElements[$chain.ChainElements.Count - 1].Certificate
        $sha = [Security.Cryptography.SHA256]::Create().ComputeHash($root.RawData)
        (([BitConverter]::ToString($sha)) -replace '-', '').ToLower() -eq $CaHash
    }.GetNewClosure()
}

function Get-FromHub([string]$Url, [string]$OutFile) {
    if (-not $Url.StartsWith("$HubUrl/")) { Fail "refusing to fetch from outside the hub: $Url" }
    (New-Object Net.WebClient).DownloadFile($Url, $OutFile)
}

function Main {
    $principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
        Fail 'run this in a PowerShell opened as Administrator'
    }
    $arch = switch ($env:PROCESSOR_ARCHITECTURE) { 'AMD64' { 'x86_64' } 'ARM64' { 'arm64' } 'x86' { 'i686' } default { Fail "unsupported architecture: $env:PROCESSOR_ARCHITECTURE" } }
    Say "platform: windows/$arch"
    Use-HubCa
    $work = Join-Path ([IO.Path]::GetTempPath()) ("muster-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $work | Out-Null
    try {
        $latestFile = Join-Path $work 'latest.json'
        Get-FromHub "$HubUrl/api/v1/agent/latest?os=windows&arch=$arch" $latestFile
        $latest = Get-Content -Raw $latestFile | ConvertFrom-Json
        if ($latest.sha256 -notmatch '^[0-9a-f]{64}$') { Fail "the hub's answer has no usable SHA-256" }
        Say "hub offers muster $($latest.version) (sha256 $($latest.sha256))"
        $installed = (Test-Path $Binary) -and ((Get-FileHash -Algorithm SHA256 $Binary).Hash.ToLower() -eq $latest.sha256)
        if ($installed) {
            Say "muster $($latest.version) is already installed at $Binary"
        } else {
            $download = Join-Path $work 'muster.exe'
            Get-FromHub $latest.url $download
            $actual = (Get-FileHash -Algorithm SHA256 $download).Hash.ToLower()
            if ($actual -ne $latest.sha256) { Fail "SHA-256 mismatch: expected $($latest.sha256), got $actual; nothing was installed" }
            Say 'downloaded and checked the binary'
        }
        # A running agent must not keep old credentials across a re-enrollment.
        $service = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
        if ($service -and $service.Status -ne 'Stopped') { Stop-Service -Name $ServiceName; Say 'stopped the running agent service' }
        if (-not $installed) {
            New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
            Move-Item -Force $download $Binary
            Say "installed $Binary"
        }
        $enrollArgs = @('enroll', '--hub', $HubUrl, '--config-dir', $ConfigDir)
        if ($Name -ne '') { $enrollArgs += @('--name', $Name) }
        foreach ($l in $Label) { $enrollArgs += @('--label', $l) }
        if ($Force) { $enrollArgs += '--force' }
        $env:MUSTER_ENROLL_TOKEN = $Token
        & $Binary @enrollArgs
        if ($LASTEXITCODE -ne 0) { Fail 'enrollment failed (see above)' }
        Say 'enrolled'
        if (-not $service) {
            New-Service -Name $ServiceName -DisplayName 'Muster agent' -StartupType Automatic `
                -BinaryPathName "`"$Binary`" agent --config-dir `"$ConfigDir`"" | Out-Null
            Say 'installed the MusterAgent service'
        }
        Start-Service -Name $ServiceName
        for ($i = 0; $i -lt 60; $i++) {
            $status = & $Binary status --json --config-dir $ConfigDir 2>$null | ConvertFrom-Json -ErrorAction SilentlyContinue
            if ($status -and $status.hub.agent.status -eq 'online') {
                Say "online: $($status.name) ($($status.agent_id))"
                return
            }
            Start-Sleep -Seconds 1
        }
        Fail "the agent did not come online within 60 s; check the MusterAgent service and 'muster status --config-dir $ConfigDir'"
    } finally {
        Remove-Item Env:\MUSTER_ENROLL_TOKEN -ErrorAction SilentlyContinue
        Remove-Item -Recurse -Force $work -ErrorAction SilentlyContinue
        # The check trusted only the hub's CA: give the session its usual checks back.
        [Net.ServicePointManager]::ServerCertificateValidationCallback = $null
    }
}

Main
