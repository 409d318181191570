// Storage account for the Functions host (AzureWebJobsStorage) and for the
// Flex Consumption deployment package. Keys are switched off: every caller
// (host, deployment, developer) authenticates with Entra ID and RBAC.

@description('Storage account name (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the account.')
param tags object

@description('Blob container that receives the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Table holding the stream journal (live turn events, core/journal.py).')
param journalTableName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    // No account keys and no SAS signed with them: identity-only access.
    allowSharedKeyAccess: false
    // The portal defaults to Entra ID when browsing data.
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    // Public endpoint stays on: Flex Consumption without a VNet reaches storage
    // over it. Access is still denied without a data-plane role.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }

  resource blobServices 'blobServices' = {
    name: 'default'

    resource deploymentContainer 'containers' = {
      name: deploymentContainerName
      properties: {
        publicAccess: 'None'
      }
    }
  }

  // Created here so the app never needs to create it at run time.
  resource tableServices 'tableServices' = {
    name: 'default'

    resource journalTable 'tables' = {
      name: journalTableName
    }
  }
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
