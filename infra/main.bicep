// Entry point for `azd provision` / `azd up`.
// Creates one resource group holding: a user-assigned identity, storage (no keys),
// Log Analytics + Application Insights (Entra ID auth), Azure OpenAI (no keys),
// a Durable Task Scheduler with a task hub, and a Flex Consumption Function app.
// Nothing here creates or passes a secret: every connection uses the identity.
targetScope = 'subscription'

// ---------------------------------------------------------------------------
// Parameters (azd fills them from main.parameters.json / `azd env set`)
// ---------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('azd environment name; seeds resource names and the azd-env-name tag.')
param environmentName string

// Regions where, when this was written, Flex Consumption, Durable Task Scheduler
// and a GlobalStandard gpt-4o-mini deployment were all offered. Availability
// changes: check `az functionapp list-flexconsumption-locations` and the model
// availability table before adding a region.
@minLength(1)
@description('Region for every resource.')
@allowed([
  'australiaeast'
  'brazilsouth'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southindia'
  'swedencentral'
  'uksouth'
  'westeurope'
  'westus'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the developer running azd. When set, that principal gets the same data roles as the app so it can run the app locally against these resources. Leave empty to skip.')
param principalId string = ''

@description('Type of principalId: User for a person, ServicePrincipal when azd runs in CI.')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Chat model to deploy. Pair it with a version that exists for it (gpt-4o-mini: 2024-07-18; gpt-4.1-mini: 2025-04-14).')
@allowed([
  'gpt-4o-mini'
  'gpt-4o'
  'gpt-4.1-mini'
  'gpt-4.1-nano'
  'gpt-4.1'
  'gpt-5-mini'
  'gpt-5-nano'
])
param chatModelName string = 'gpt-4o-mini'

@description('Version of chatModelName.')
param chatModelVersion string = '2024-07-18'

@description('Deployment type. GlobalStandard is pay-per-token with the widest regional availability.')
@allowed([
  'GlobalStandard'
  'DataZoneStandard'
  'Standard'
])
param chatDeploymentSkuName string = 'GlobalStandard'

@description('Deployment capacity in thousands of tokens per minute (quota is per subscription and region).')
@minValue(1)
@maxValue(1000)
param chatDeploymentCapacity int = 30

@description('Name of the model deployment; the app receives it as AZURE_OPENAI_DEPLOYMENT.')
@minLength(2)
@maxLength(64)
param chatDeploymentName string = 'chat'

@description('Azure OpenAI data-plane API version the app uses (AZURE_OPENAI_API_VERSION).')
param openAiApiVersion string = '2024-10-21'

@description('Durable Task Scheduler SKU: Consumption (pay per action, nothing at idle) or Dedicated (fixed monthly cost per capacity unit).')
@allowed([
  'Consumption'
  'Dedicated'
])
param dtsSkuName string = 'Consumption'

@description('Capacity units for the Dedicated SKU (ignored for Consumption). Three are needed for high availability.')
@minValue(1)
@maxValue(3)
param dtsCapacity int = 1

// Flex Consumption has no fixed outbound IP addresses, so the scheduler cannot
// be pinned to the app's IPs. It is left open at the network layer and guarded
// by Entra ID instead: callers need a token and the Durable Task Data
// Contributor role. An empty list would deny all traffic.
@description('IP ranges allowed to reach the Durable Task Scheduler.')
param dtsIpAllowlist array = [
  '0.0.0.0/0'
]

@description('Durable Task Scheduler task hub name (TASKHUB_NAME).')
@minLength(3)
@maxLength(64)
param taskHubName string = 'default'

@description('Maximum Flex Consumption instances the app may scale out to; a cost ceiling.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

// ---------------------------------------------------------------------------
// Naming
// ---------------------------------------------------------------------------

var abbrs = loadJsonContent('abbreviations.json')
// Stable per subscription + environment + region, so re-provisioning is idempotent.
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'
// The stream journal's table (core/journal.py) in the same storage account.
var journalTableName = 'streamjournal'

// ---------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2022-09-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    journalTableName: journalTableName
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module openAi 'modules/openai.bicep' = {
  name: 'openai'
  scope: rg
  params: {
    name: '${abbrs.cognitiveServicesAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentName: chatDeploymentName
    modelName: chatModelName
    modelVersion: chatModelVersion
    skuName: chatDeploymentSkuName
    capacity: chatDeploymentCapacity
  }
}

module scheduler 'modules/scheduler.bicep' = {
  name: 'scheduler'
  scope: rg
  params: {
    name: '${abbrs.durableTaskSchedulers}${resourceToken}'
    location: location
    tags: tags
    taskHubName: taskHubName
    skuName: dtsSkuName
    capacity: dtsCapacity
    ipAllowlist: dtsIpAllowlist
  }
}

// Data roles for the app's identity.
module appRoles 'modules/role-assignments.bicep' = {
  name: 'app-roles'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    principalType: 'ServicePrincipal'
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    openAiAccountName: openAi.outputs.name
    schedulerName: scheduler.outputs.name
  }
}

// The same data roles for the developer, so `func start` / devhost can run
// locally against the cloud resources with their own az login.
module developerRoles 'modules/role-assignments.bicep' = if (!empty(principalId)) {
  name: 'developer-roles'
  scope: rg
  params: {
    principalId: principalId
    principalType: principalType
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    openAiAccountName: openAi.outputs.name
    schedulerName: scheduler.outputs.name
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  // Roles first: the host starts with the identity as soon as the app exists.
  dependsOn: [
    appRoles
  ]
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    journalTableName: journalTableName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    maximumInstanceCount: maximumInstanceCount
    openAiEndpoint: openAi.outputs.endpoint
    openAiDeploymentName: openAi.outputs.deploymentName
    openAiApiVersion: openAiApiVersion
    schedulerEndpoint: scheduler.outputs.endpoint
    taskHubName: scheduler.outputs.taskHubName
  }
}

// ---------------------------------------------------------------------------
// Outputs (azd stores them; read with `azd env get-value NAME`)
// ---------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_URL string = functionApp.outputs.url
output AZURE_OPENAI_ENDPOINT string = openAi.outputs.endpoint
output AZURE_OPENAI_DEPLOYMENT string = openAi.outputs.deploymentName
output AZURE_CLIENT_ID string = identity.outputs.clientId
output DTS_NAME string = scheduler.outputs.name
output DTS_ENDPOINT string = scheduler.outputs.endpoint
output TASKHUB_NAME string = scheduler.outputs.taskHubName
// Documented dashboard form: https://dashboard.durabletask.io/?endpoint=<endpoint>&taskhub=<hub>
output DTS_DASHBOARD_URL string = 'https://dashboard.durabletask.io/?endpoint=${uriComponent(scheduler.outputs.endpoint)}&taskhub=${uriComponent(scheduler.outputs.taskHubName)}'
