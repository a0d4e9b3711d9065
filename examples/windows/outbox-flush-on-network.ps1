# Registers a Windows scheduled task that runs `outbox flush` whenever a network connects
# (event 10000 of Microsoft-Windows-NetworkProfile/Operational) and every 15 minutes.
# Run once in PowerShell as the user who owns the journal. Store the API key first, for
# that user only:  [Environment]::SetEnvironmentVariable("CRAFTKIT_API_KEY", "ck_live_...", "User")

$action = New-ScheduledTaskAction -Execute "outbox.exe" -Argument "flush --timeout 120"

$onNetwork = Get-CimClass -ClassName MSFT_TaskEventTrigger -Namespace Root/Microsoft/Windows/TaskScheduler |
    New-CimInstance -ClientOnly
$onNetwork.Enabled = $true
$onNetwork.Subscription = @"
<QueryList><Query Id="0" Path="Microsoft-Windows-NetworkProfile/Operational">
<Select Path="Microsoft-Windows-NetworkProfile/Operational">*[System[EventID=10000]]</Select>
</Query></QueryList>
"@

$every15 = New-ScheduledTaskTrigger -Once -At (Get-Date) -RepetitionInterval (New-TimeSpan -Minutes 15)
$settings = New-ScheduledTaskSettingsSet -StartWhenAvailable -MultipleInstances IgnoreNew

Register-ScheduledTask -TaskName "outbox flush" -Action $action -Trigger @($onNetwork, $every15) `
    -Settings $settings -Description "Submit pending Craftkit renders when the network is back"
